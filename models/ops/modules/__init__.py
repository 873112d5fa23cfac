"""Module API of multi-scale deformable attention (original import path kept)."""
from .ms_deform_attn import MSDeformAttn

__all__ = ["MSDeformAttn"]
