"""What the runs say, in the order the data flows:

* :mod:`.records`: a grid's runs as a DataFrame, one row per (cell, seed); :class:`RunIndex`;
* :mod:`.tables`: the paper's layout of those rows (aggregated over seeds) and the report files,
  with :mod:`.stat_columns` (intervals, tests; computed by :mod:`.stats`),
  :mod:`.reference_columns` (the published numbers of :mod:`.reference` beside ours) and
  :mod:`.render` (a :class:`Table` as Markdown, LaTeX or a rich table); :mod:`.plots` (curves, EDF);
* the trained models' analyses: :mod:`.targets` (what is analysed), :mod:`.diversity`
  (patch-token diversity), :mod:`.stem_bn` (stem BN scales), :mod:`.stability_summary`;
* :mod:`.claims`: the paper's claims with their verdicts.

May import: :mod:`reproduce.experiments` and everything below it.
"""
