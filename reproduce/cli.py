"""The ``srv`` command line: a thin Typer layer over the library.

Every module of :mod:`reproduce.commands` defines ``register(app)``; this file only discovers them,
so each command lives beside the code it drives. Commands import torch, timm, fvcore and pandas
inside their bodies, so ``srv --help`` answers instantly.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

from reproduce import __version__, commands

app = typer.Typer(
    name="srv",
    help="Reproduce 'Scaled ReLU Matters for Training Vision Transformers' (Wang et al., "
    "AAAI 2022): train the paper's models, run its ablations, count params/FLOPs, write tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a bug prints a plain traceback, never pages of locals
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        print(f"srv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """srv: the Scaled-ReLU ViT reproduction suite."""


for _info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{commands.__name__}.{_info.name}").register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
