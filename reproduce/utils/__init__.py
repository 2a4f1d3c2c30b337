"""Utilities every layer may use: atomic file writes (:mod:`.atomic`), the process group and
device of a run (:mod:`.distributed`), the console reporter of a training run
(:mod:`.reporter`) and where the shipped recipes and reference tables live
(:mod:`.resources`).

May import: :mod:`reproduce.errors` only.
"""
