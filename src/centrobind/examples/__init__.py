"""Worked examples that run from one command (``centrobind example NAME``)."""
