"""Statistics behind the gates: pure numpy/scipy functions that return result objects with named fields.

One module per job; each function's docstring carries the formula and its reference.
"""
