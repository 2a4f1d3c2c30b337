"""The input path: data sets (digits, synthetic, image folders; :mod:`.datasets`), DeiT's and
Xiao et al.'s transforms (:mod:`.transforms`, with the RandAugment guard of :mod:`.augment`),
tolerant image folders (:mod:`.images`), per-sample seeds and shards (:mod:`.sampling`), the
timm loaders (:mod:`.torch_loaders`) and the DALI pipeline (:mod:`.dali`).

May import: :mod:`reproduce.recipes`, :mod:`reproduce.utils`, :mod:`reproduce.errors` (not
:mod:`reproduce.models`: data and models are siblings).
"""
