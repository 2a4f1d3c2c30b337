"""What the runs say: tables of a grid with their statistics (:mod:`.tables`, :mod:`.stats`),
plots (:mod:`.plots`), the published numbers (:mod:`.reference`), the trained models' analyses
(:mod:`.analysis`) and the paper's claims with their verdicts (:mod:`.claims`).

May import: :mod:`reproduce.experiments` and everything below it.
"""
