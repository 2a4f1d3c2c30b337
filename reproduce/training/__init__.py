"""One training run.

* :mod:`.config`: a run's config, identity and derived values; :mod:`.runs`: its folder.
* :mod:`.builders`: what a run builds (model, optimizer, loss, with :mod:`.schedule` and
  :mod:`.ema`) and the refusals; :mod:`.dry_run` (with :mod:`.cost`, :mod:`.memory`).
* :mod:`.loop`: one step, one epoch, evaluation; :mod:`.engine`: the run's life (build, resume,
  epochs, checkpoints, result); :mod:`.resume`: checkpoints read, resumed and started from;
  collaborators :mod:`.device`, :mod:`.timing`, :mod:`.tracking`.
* :mod:`.fidelity`: the recipes measured against their sources; :mod:`.bench`: throughput.

May import: :mod:`reproduce.models`, :mod:`reproduce.data` and everything below them.
"""
