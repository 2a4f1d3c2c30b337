"""What srv's commands exit with: the exit codes (:class:`ExitCode`), and the user errors that
become one clear line on stderr naming the problem and the fix, with exit code 2.

An error is the user's (bad input, an unusable environment) when its class derives from
:class:`UserError`, declared where the class is defined; :class:`SrvError` is the common one.

May import: nothing of srv (every layer imports it).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from enum import IntEnum
from typing import Any, TypeVar

import typer

__all__ = ["ExitCode", "SrvError", "UserError", "fail", "handle_errors"]

F = TypeVar("F", bound=Callable[..., Any])


class ExitCode(IntEnum):
    """The exit codes of every ``srv`` command."""

    OK = 0
    FAILED = 1  # a run or cell failed (out of memory, a crash)
    USAGE = 2  # a user error: bad input or an unusable environment (one line on stderr)
    DIVERGED = 3  # a run diverged (a non-finite loss or gradient, a collapsed loss scale)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT): rerunning the command resumes


class UserError(Exception):
    """Base of the errors that are the user's input problem, not a bug: a CLI command prints
    their message as one line and exits with :attr:`ExitCode.USAGE`. Subclass it where the
    error is defined (with a builtin base too where callers catch one, e.g. ``KeyError``)."""


class SrvError(UserError):
    """Bad input or an unusable environment: the message names the problem and the fix."""


def fail(message: str, code: int = ExitCode.USAGE) -> typer.Exit:
    """Print ``srv: error: message`` on stderr and return the ``typer.Exit`` to raise."""
    print(f"srv: error: {message}", file=sys.stderr)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Decorator for CLI commands: user errors become one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (UserError, FileNotFoundError) as err:  # the user's input, not a bug
            message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            raise fail(str(message)) from None

    return wrapper  # type: ignore[return-value]
