"""The benchmark suite that ``gradcheck-suite bench`` runs (pytest-benchmark files)."""
