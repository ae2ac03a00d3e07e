"""Training configs: one file per row of the paper's tables (see recipes.py)."""
