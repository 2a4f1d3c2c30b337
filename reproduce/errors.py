"""User-facing errors: one clear line on stderr naming the problem and the fix, exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2


class SrvError(Exception):
    """Bad input or an unusable environment: the message names the problem and the fix."""


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``srv: error: message`` on stderr and return the ``typer.Exit`` to raise."""
    print(f"srv: error: {message}", file=sys.stderr)
    return typer.Exit(code)


#: exception types that are the user's input problem, not a bug; a lower layer's own types
#: (an unknown model, a bad stem spec) join with :func:`user_error` when their module is imported
_USER_ERRORS: list[type[BaseException]] = [SrvError, FileNotFoundError]

E = TypeVar("E", bound=type[BaseException])


def user_error(cls: E) -> E:
    """Class decorator: raising ``cls`` in a CLI command is bad input (one line, exit 2)."""
    if cls not in _USER_ERRORS:
        _USER_ERRORS.append(cls)
    return cls


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's input problem, not a bug."""
    return tuple(_USER_ERRORS)


def handle_errors(fn: F) -> F:
    """Decorator for CLI commands: user errors become one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except user_errors() as err:
            message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            raise fail(str(message)) from None

    return wrapper  # type: ignore[return-value]
