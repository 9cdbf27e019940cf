"""Benchmarks of hand-written backwards against autograd, for a user's own CI.

``gradcheck-suite bench`` (:mod:`gradcheck_suite.commands.bench`) runs the suite in
``suite/`` under pytest-benchmark and writes the report.  One module per job:

* :mod:`.setup`: a model bound to its case, its tensors and upstream gradient, shared by
  the timed regions, the FLOP count and the memory rounds;
* :mod:`.timing`: the timed regions, and interleaved rounds (manual, autograd and a
  calibration matmul back to back in one process, order rotating);
* :mod:`.calibration`: the matmul of each model's own shape and dtype, the yardstick of
  "% matmul";
* :mod:`.flops` and :mod:`.memory`: FLOPs counted from the ops a model runs, and the bytes
  each side keeps for its backward and peaks at;
* :mod:`.verdicts`: the check verdict every row carries (a quick check, or a check report);
* :mod:`.stats`: medians, interquartile ranges, bootstrap intervals;
* :mod:`.rows`: reading a run's JSON, a row per table (``grid`` or ``sweep``);
* :mod:`.regression`: the regression gate on the manual/autograd ratio's interval;
* :mod:`.markdown` and :mod:`.plots`: the Markdown report and the sweep plot;
* :mod:`.hooks`: the pytest hooks of the suite (``-p gradcheck_suite.bench.hooks``).

Nothing here imports the command line: the commands import downward.
"""
