"""What to run, as data: a training recipe read from ``recipes/*.toml`` with every value's
source (:mod:`.recipe`) and the paper's experiment grids from ``recipes/grids/*.toml``
(:mod:`.grids`, their axes in :mod:`.axes`).

May import: :mod:`reproduce.utils`, :mod:`reproduce.errors`.
"""
