"""The ``srv`` command line: a thin Typer layer over the library.

Every module of :mod:`reproduce.commands` defines ``register(app)``; this file only discovers them,
so each command lives beside the code it drives. Commands import torch, timm, fvcore and pandas
inside their bodies, so ``srv --help`` answers instantly.

Two things are the same for every command: help texts are docstrings rendered as flowing
paragraphs (a line break inside a paragraph is a space, so rich rewraps them at any width) and
flags show no ``<bool>`` type; a bad option or argument (``--jobs 0``, an unknown option or
command) is one ``srv: error: ...`` line on stderr with exit code 2, as every other input error
(:mod:`reproduce.errors`).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from reproduce import __version__, commands
from reproduce.errors import fail


def _error_class(name: str) -> type[BaseException]:
    """Click's exception ``name`` (Typer may vendor its own click: found through its MRO)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


_UsageError = _error_class("UsageError")


def unwrap(doc: str | None) -> str | None:
    """A docstring as paragraphs without hard line breaks (rich wraps them to the terminal)."""
    if doc is None:
        return None
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _no_flag_types(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # rich help shows no "<bool>" for a flag
    return params


def _usage_line(err: Any) -> typer.Exit:
    """A click usage error as ``srv: error: srv CMD: message (srv CMD --help)``."""
    names, ctx = [], getattr(err, "ctx", None)
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    where = " ".join(["srv", *reversed(names)])
    message = " ".join(err.format_message().split()).rstrip(".")
    return fail(f"{where}: {message[:1].lower()}{message[1:]} (see {where} --help)",
                code=err.exit_code)


class SrvCommand(TyperCommand):
    """A command whose flags show no type in its help."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_types(super().get_params(ctx))


class SrvGroup(TyperGroup):
    """The root group: usage errors of any command below it become one ``srv: error:`` line."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_types(super().get_params(ctx))

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except _UsageError as err:
            if type(err).__name__ == "NoArgsIsHelpError" or self.name != "srv":
                raise
            raise _usage_line(err) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _UsageError as err:
            if type(err).__name__ == "NoArgsIsHelpError" or ctx.parent is not None:
                raise
            raise _usage_line(err) from None


app = typer.Typer(
    name="srv",
    help="Reproduce 'Scaled ReLU Matters for Training Vision Transformers' (Wang et al., "
    "AAAI 2022): train the paper's models, run its ablations, count params/FLOPs, write tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a bug prints a plain traceback, never pages of locals
    rich_markup_mode="rich",
    cls=SrvGroup,
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


def _style(typer_app: typer.Typer) -> None:
    """Every command of ``typer_app`` (and of its sub-apps): unwrapped help, no flag types."""
    for info in typer_app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = SrvCommand
        if info.help is None and info.callback is not None:
            info.help = unwrap(info.callback.__doc__)
    for group in typer_app.registered_groups:
        sub = group.typer_instance
        if sub is not None:
            sub.info.cls = SrvGroup
            _style(sub)


for _info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{commands.__name__}.{_info.name}").register(app)
_style(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
