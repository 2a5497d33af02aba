"""The benchmark (``bench/run``) and its measurements, run from the repository root."""
