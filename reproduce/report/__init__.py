"""What the run records say, in the order the data flows:

* :mod:`.records`: a grid's records as a DataFrame, one row per (cell, seed); :class:`RecordIndex`;
* :mod:`.tables`: the paper's layout of those rows (aggregated over seeds) and the report files,
  with :mod:`.stat_columns` (intervals, tests; computed by :mod:`.stats`),
  :mod:`.reference_columns` (the published numbers of :mod:`.reference` beside ours) and
  :mod:`.render` (a :class:`Table` as Markdown, LaTeX or a rich table); :mod:`.plots` (curves, EDF);
* :mod:`.claims`: the paper's claims with their verdicts.

Reads records (:mod:`reproduce.records`), never run folders: a shipped ``results/`` rebuilds every
table. May import: models, data, recipes, records, utils; not experiments or training
(tests/test_layout.py).
"""
