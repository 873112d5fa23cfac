"""Dataset preparation scripts (convert_davis_to_ytvos.py)."""
