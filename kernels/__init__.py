"""actkit.kernels: Triton code only (device functions, generic kernels, launchers).

Importing this package imports Triton. Set ``TRITON_INTERPRET=1`` *before* importing it
to run the kernels on CPU tensors through Triton's interpreter.
"""
from . import activations, elementwise, glu, layout

__all__ = ["activations", "elementwise", "glu", "layout"]
