import dataclasses
import re

import pytest

from gradcheck_suite import Case, load

pytest_plugins = ["pytester"]


def pytest_configure(config):
    # the checker's own tests run small cases: one intra-op thread keeps them from stalling
    # when another process holds a core (the CLI and the plugin default to one as well).
    # GRADCHECK_SUITE_TEST_THREADS=N runs the suite with N threads instead: torch's kernels
    # then split their sums differently, and no test may depend on one order's last bits
    import os

    import torch
    threads = os.environ.get("GRADCHECK_SUITE_TEST_THREADS", "1")
    if not threads.isdigit() or int(threads) < 1:
        raise pytest.UsageError(f"GRADCHECK_SUITE_TEST_THREADS={threads!r}: expected a whole number of threads, 1 or more")
    torch.set_num_threads(int(threads))


@pytest.fixture(scope="session")
def registry():
    reg = load()
    assert not reg.problems and not reg.not_found
    return reg


@pytest.fixture
def case_of():
    """case_of(model, dtype=..., seed=..., scale=..., **dims) -> Case."""

    def make(model, *, dtype=None, seed=0, scale=1.0, device="cpu", **dims):
        full = {k: dims.get(k, d.low) for k, d in model.dims.items()}
        return Case(model.name, full, dtype or model.dtype, device, seed, scale)

    return make


def with_backward(model, backward, **changes):
    """The same model with another (usually deliberately wrong) backward."""
    return dataclasses.replace(model, backward=backward, **changes)


def flat(text):
    """Report text with its 80-column wrapping undone: continued lines joined, spaces folded."""
    return " ".join(text.replace(" \\\n", " ").split())


def reproduce_lines(text):
    """The reproducing commands in a report, each joined back into one line."""
    joined = re.sub(r" \\\n\s+", " ", text)
    return [line.split("reproduce: ", 1)[1].strip() for line in joined.splitlines() if "reproduce: " in line]
