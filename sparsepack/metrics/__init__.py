"""Measures of how alike two rankings are, and the one gate a variant is held to. Plain Python: no torch."""
