"""srv: reproduce "Scaled ReLU Matters for Training Vision Transformers" (Wang et al., AAAI 2022).

The package imports nothing heavy at the top level, so the ``srv`` CLI starts instantly; torch,
timm, fvcore and pandas are imported by the modules that need them.
"""

__version__ = "0.1.0"
