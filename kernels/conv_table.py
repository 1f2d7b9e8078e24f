"""Measured dispatch table of the large-kernel convolution: where Triton beat cuDNN.

This is data, written by ``python benchmarks/conv.py --write-table`` on a GPU and read by
:func:`flowkit.kernels.conv.conv_backend`. Each entry is one measured shape::

    {"device": "NVIDIA H100 80GB HBM3", "precision": "bfloat16", "c_in": 16, "c_out": 32,
     "kernel": 7, "pixels": 2097152, "pass": "fwd_bwd", "speedup": 1.10}

``precision`` is ``float32``, ``tf32``, ``bfloat16`` or ``float16``; ``pixels`` is
``batch * height * width``; ``pass`` is ``fwd`` or ``fwd_bwd``; ``speedup`` is the best cuDNN
median time over ours. An entry applies on its device to the same precision, channels, kernel
size and pass from its pixel count up to the next measured one. Empty: nothing has been measured
yet, so CUDA tensors take cuDNN unless ``FLOWKIT_CONV_KERNEL=force``.
"""

from __future__ import annotations

__all__ = ["CONV_DISPATCH_TABLE"]

CONV_DISPATCH_TABLE: tuple[dict[str, object], ...] = ()
