"""Analyses of trained models: what the checkpoints say about why it works (Wang et al. §4).

targets (which runs, checkpoints or untrained models to load), diversity (patch-token effective
rank and cosine similarity per layer; the diversity claim's measurement), stem_bn (the stem's BN
scales) and stability_summary (the training signals of a grid's runs).

May import: report (tables, plots), experiments, training, models, data, recipes, utils, records.
"""
