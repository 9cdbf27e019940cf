"""Benchmarks of hand-written backwards against autograd, for a user's own CI.

``gradcheck-suite bench`` runs the suite in ``suite/`` under pytest-benchmark.  One
module per job:

* :mod:`.timing`: the timed regions, and interleaved rounds (manual, autograd and a
  calibration matmul back to back in one process, order rotating);
* :mod:`.calibration`: the matmul of each model's own shape and dtype, the yardstick of
  "% matmul";
* :mod:`.verdicts`: the check verdict every row carries (a quick check, or a check report);
* :mod:`.stats`: medians, interquartile ranges, bootstrap intervals;
* :mod:`.rows`: reading a run's JSON;
* :mod:`.compare`: the regression gate on the manual/autograd ratio's interval;
* :mod:`.report` and :mod:`.plots`: Markdown and the sweep plot;
* :mod:`.plugin`: the pytest hooks of the suite; :mod:`.command`: the command line.
"""
from .command import main

__all__ = ["main"]
