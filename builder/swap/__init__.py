"""The fused swap -> mouth -> restore -> paste pass."""
