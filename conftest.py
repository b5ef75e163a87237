"""Root pytest configuration, loaded before any test module imports actkit or Triton.

Without a CUDA GPU, Triton's interpreter runs the kernels on CPU tensors; it must be
switched on before ``actkit.kernels`` (and so ``@triton.jit``) is imported. With a GPU the
kernels run compiled, unless TRITON_INTERPRET is already set by the caller.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
