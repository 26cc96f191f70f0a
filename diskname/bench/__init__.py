"""``python -m diskname bench``: the whole system measured at fleet scale (SPEC §9)."""
