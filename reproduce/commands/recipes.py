"""``srv recipes``: the training recipes, their keys, and each value with the source it follows."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from reproduce.errors import handle_errors


def _show(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A rich table on a terminal, plain columns otherwise (logs, pipes, tests)."""
    from reproduce.utils.console import print_table

    print_table(title, header, rows)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    if value == "":
        return '""'
    return str(value)


def _list() -> None:
    from reproduce.recipes.recipe import list_recipes, load_recipe

    rows = []
    for name in list_recipes():
        _, meta = load_recipe(name)
        extends = f" (extends {meta['extends']})" if meta.get("extends") else ""
        rows.append([name, str(meta.get("description", "")) + extends,
                     str(meta.get("source", ""))])
    _show("srv recipes (srv recipes NAME: every value with its source)",
          ["recipe", "what", "source"], rows)


def _keys() -> None:
    from dataclasses import fields

    from reproduce.recipes.recipe import CHOICES, Recipe, key_help

    rows = []
    for f in fields(Recipe):
        kind = str(f.type)
        if f.name in CHOICES:
            kind += ": " + " | ".join(CHOICES[f.name])
        rows.append([f.name, kind, _fmt(f.default), key_help(f.name)])
    _show("recipe keys (set in a recipe file, or --set KEY=VALUE)",
          ["key", "type", "default", "meaning"], rows)


def _one(name: str, facts: bool) -> None:
    from reproduce.recipes.recipe import load_recipe, recipe_keys_set
    from reproduce.training.fidelity.sources import source_for

    recipe, meta = load_recipe(name)
    src = source_for(meta["name"])
    print(f"recipe {meta['name']}: {meta.get('description', '')}")
    print(f"source: {meta.get('source', '')}")
    set_here = recipe_keys_set(name)
    rows = []
    for key, value in recipe.to_dict().items():
        if src is not None:
            where = src.where(key)
        else:
            where = "the recipe file" if key in set_here else "srv default"
        rows.append([key, _fmt(value), where])
    _show(f"values of {meta['name']}", ["key", "value", "source"], rows)
    if src is None:
        return
    if facts:
        fact_rows = _fact_rows(src, recipe.to_dict())
        _show(f"what srv builds for {meta['name']} (measured on {src.model}), against the "
              f"source", ["fact", "source", "srv builds", "", "where the source says so"],
              fact_rows)
    differences = [(f.what, f.source, f"{_fmt(f.srv)}: {f.why}") for f in src.facts
                   if f.differs] + [(d.what, d.source, d.srv) for d in src.differences]
    print(f"\nknown differences from the source ({len(differences)}):")
    for what, source, srv in differences:
        print(f"  - {what}: source {source}; srv: {srv}")


def _fact_rows(src: Any, values: dict[str, Any]) -> list[list[str]]:
    """Each fact of ``src``: the source's value, what srv builds, and whether they agree. The
    measurement builds the recipe's model, optimizer, schedule and transforms (seconds); its rows
    are cached under the version of srv's code, the resolved recipe and torch / timm /
    torchvision, so a second ``srv recipes NAME`` on the same code reads them back."""
    from pathlib import Path

    from reproduce.training.fidelity.facts import Built
    from reproduce.utils import cache

    package = Path(__file__).resolve().parent.parent
    key = {"code": cache.code_version(package.rglob("*.py"), ("torch", "timm", "torchvision")),
           "recipe": src.recipe, "values": values}
    key = cache.json_key(key)
    rows = cache.load("recipe-facts", key)
    if rows is not None:
        return [list(map(str, r)) for r in rows]
    built = Built(src.recipe, src.model)
    rows = []
    for fact in src.facts:
        try:
            got: Any = fact.measure(built)
        except Exception as err:  # noqa: BLE001  (shown, and the test fails on it)
            got = f"error: {err}"
        ok = fact.matches(got)
        mark = "DIFFERS" if not ok else "known difference" if fact.differs else "same"
        rows.append([fact.what, _fmt(fact.value), _fmt(got), mark, fact.source])
    if not any(r[2].startswith("error: ") for r in rows):  # a failure is never remembered
        cache.store("recipe-facts", key, rows)
    return rows


@handle_errors
def recipes(
    name: Annotated[str | None, typer.Argument(
        help="A recipe (deit, xiao, ...) or .toml path: every resolved value with the source it "
             "follows, and what srv builds measured against the source.")] = None,
    keys: Annotated[bool, typer.Option(
        "--keys", help="Every recipe key with its type, default and meaning.")] = False,
    facts: Annotated[bool, typer.Option(
        "--facts/--no-facts", help="With NAME: build the recipe's optimizer, schedule, EMA, "
                                   "transforms and model and compare them with the source "
                                   "(a few seconds; cached for the same code and recipe).")] = True,
) -> None:
    """The training recipes and their sources (DeiT's main.py, pycls's configs)."""
    if keys:
        _keys()
    elif name:
        _one(name, facts)
    else:
        _list()


def register(app: typer.Typer) -> None:
    app.command("recipes")(recipes)
