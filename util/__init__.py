"""Shared utilities: nested tensors, distributed helpers, checkpoints, logging."""
