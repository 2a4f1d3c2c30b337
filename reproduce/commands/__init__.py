"""CLI commands, thin parsers over the packages below; each module defines
``register(app: typer.Typer) -> None``.

May import: every other package of :mod:`reproduce`.
"""
