"""Evaluation: the lmms-eval plugin and offline tasks (LMM), and the encoder benchmarks."""
