"""Benchmark scripts for lookalike (see quality.py and speed.py); not part of the installed package."""
