"""One training run: its config (:mod:`.config`), the parts a recipe builds (:mod:`.runnable`,
:mod:`.optim`, :mod:`.schedule`, :mod:`.ema`, :mod:`.sam`), the engine (:mod:`.engine`: the run
and its outcome; :mod:`.trainer`: the epoch loop; :mod:`.step`: one step; :mod:`.evaluation`),
its stability signals (:mod:`.stability`), checkpoints (:mod:`.checkpoints`) and run folders
(:mod:`.runs`); the recipe fidelity checks (:mod:`.fidelity`, :mod:`.fidelity_measure`) and the
throughput benchmark (:mod:`.bench`).

May import: :mod:`reproduce.models`, :mod:`reproduce.data` and everything below them.
"""
