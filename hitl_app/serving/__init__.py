"""Answering: loading the base model, generation, hot-swapping versions and the fast decode path."""
