"""Launcher helpers shared by every kernel family: supported dtypes and the flat-buffer layout rule.

The kernels walk tensors as flat buffers, so every operand of one launch must share the
output's strides. The output comes from ``torch.empty_like``, which keeps the strides of any
gap-free tensor (contiguous, channels_last, transposed) and is contiguous in the suggested
memory format otherwise. So dense inputs are processed in place and only views with gaps
(slices, expands) pay one copy.
"""
import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_dtype(t: torch.Tensor, what: str, family: str) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"Triton {family} kernels support float32, float16 and bfloat16; {what} is {t.dtype}")


def in_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` with ``like``'s strides, copying only when they differ."""
    return t if t.stride() == like.stride() else torch.empty_like(like).copy_(t)
