"""The recipes measured against their sources (DeiT, Xiao et al.'s pycls configs), fact by fact:
:mod:`.facts` (the vocabulary: a fact, a difference, a recipe's source, and the measurements of
what srv builds) and :mod:`.sources` (each source's values, where it says so, and the
measurement of each). ``tests/test_fidelity.py`` checks them; ``srv recipes NAME`` shows them.

May import: :mod:`reproduce.training.builders`, :mod:`reproduce.training.ema` and below.
"""
