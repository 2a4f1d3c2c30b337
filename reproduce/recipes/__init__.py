"""What to run, as data: a training recipe read from ``recipes/*.toml`` with every value's
source (:mod:`.recipe`), the paper's experiment grids from ``recipes/grids/*.toml``
(:mod:`.grids`, their axes in :mod:`.axes`) and the seeds a verdict needs, from the claims
file's ``[design]`` (:mod:`.design`).

May import: :mod:`reproduce.utils`, :mod:`reproduce.errors`.
"""
