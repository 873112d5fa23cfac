"""Mixed precision (--amp): the forward pass under autocast, everything that needs full precision in float32."""
from __future__ import annotations

import contextlib
from typing import Any

import torch


def float32_outputs(outputs: Any) -> Any:
    """Model outputs with every floating tensor in float32 (nested dicts/lists kept): matching and losses of a
    mixed-precision forward pass run in full precision."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: float32_outputs(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(float32_outputs(v) for v in outputs)
    return outputs


def forward_precision(device: torch.device, amp: str) -> Any:
    """The context of the model's forward pass: bf16 autocast for --amp bf16, else nothing."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if amp != "none":
        raise ValueError(f"--amp {amp!r}: expected 'none' or 'bf16'")
    return contextlib.nullcontext()
