"""Published RVOS methods built on the ReferFormer core; each module registers itself on import."""
