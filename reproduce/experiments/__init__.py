"""Grids of runs: the cells of a grid at a preset, their status, and the backends that train
them (one process, local jobs, torchrun, SLURM through submitit).

May import: :mod:`reproduce.training` and everything below it.
"""
