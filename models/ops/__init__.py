"""Multi-scale deformable attention (Deformable-DETR / ReferFormer op) with compiled CPU and CUDA kernels.

Importing this package never compiles anything: the kernels are built or loaded on first use, and the
pure-PyTorch path runs (with one warning) when they cannot be. ``python -m models.ops.info`` reports the
active implementation. Public API: ``models.ops.modules.MSDeformAttn`` and
``models.ops.functions.{ms_deform_attn, MSDeformAttnFunction, ms_deform_attn_core_pytorch}``.
"""
