"""The package's layout stays true: imports flow one way between its subpackages, no import
cycles (lazy imports inside functions count), no module over ~550 lines of code (docstrings,
comments and blank lines not counted) and few modules directly in ``reproduce/``
(docs/architecture.md draws the map)."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "reproduce"

#: the layers, lowest first: a module may import its own subpackage and any lower layer only
LAYERS: dict[str, float] = {
    "reproduce": 0, "reproduce.errors": 0,
    "reproduce.utils": 1, "reproduce.records": 1.5,  # records: utils (atomic writes) only
    "reproduce.recipes": 2,
    "reproduce.models": 3, "reproduce.data": 3,  # siblings: neither imports the other
    "reproduce.training": 4,
    "reproduce.experiments": 5,
    "reproduce.report": 6,
    "reproduce.analysis": 7,
    "reproduce.commands": 8,
    "reproduce.cli": 9,
    "reproduce.__main__": 10,
}
#: reporting reads run records only: it never re-resolves configs through the training stack
#: (the analyses of trained models, which load checkpoints, live in reproduce.analysis)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "reproduce.report": ("reproduce.experiments", "reproduce.training"),
}
MAX_LINES = 550
MAX_TOP_LEVEL = 10


def code_lines(source: str) -> int:
    """Lines holding code: blank lines, comment-only lines and docstrings (of the module, its
    classes and functions) are not counted, so a documented module is not split to fit."""
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                end = body[0].end_lineno or body[0].lineno
                docstrings.update(range(body[0].lineno, end + 1))
    lines: set[int] = set()
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines - docstrings)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file (relative imports
    resolved; ``from pkg import mod`` counts as importing ``pkg.mod`` when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            targets = [base_name] + [f"{base_name}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _layer(name: str) -> tuple[str, int]:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head in LAYERS:
            return head, LAYERS[head]
    raise AssertionError(f"{name} is in no layer of test_layout.LAYERS: add its subpackage")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _package_parents(name: str) -> set[str]:
    """``a.b.c`` implicitly imports ``a.b`` and ``a``: not an edge of the layering."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_imports_flow_down_the_layers() -> None:
    wrong = []
    for name, deps in _graph().items():
        own, rank = _layer(name)
        for dep in deps - _package_parents(name):
            dep_own, dep_rank = _layer(dep)
            if dep_own != own and dep_rank >= rank:
                wrong.append(f"{name} -> {dep}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_report_reads_records_not_the_training_stack() -> None:
    wrong = [f"{name} -> {dep}" for name, deps in _graph().items()
             for banned_for, banned in FORBIDDEN.items()
             if name == banned_for or name.startswith(banned_for + ".")
             for dep in deps if dep.startswith(banned)]
    assert not wrong, "report/ imports the training stack:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    graph = {name: deps - _package_parents(name) for name, deps in _graph().items()}
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_modules_are_small_and_the_top_level_is_short() -> None:
    modules = _modules()
    big = {name: n for name, path in modules.items()
           if (n := code_lines(path.read_text())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines of code: {big}"
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL, top


def test_the_line_count_counts_code_only() -> None:
    source = ('"""A module docstring\nover two lines."""\n\n# a comment\nimport os\n\n\n'
              'def f(x):\n    """Its docstring."""\n    return (x +\n            1)  # note\n')
    assert code_lines(source) == 4  # import, def, and the return over two lines


def test_one_name_one_module() -> None:
    """No two modules share a base name (``__init__`` aside, and ``commands/``, where a module is
    named after its command): ``from .x import`` and a traceback name one file."""
    seen: dict[str, list[str]] = {}
    for name, path in _modules().items():
        if path.name != "__init__.py" and not name.startswith("reproduce.commands."):
            seen.setdefault(path.stem, []).append(name)
    assert not {k: v for k, v in seen.items() if len(v) > 1}


def test_package_inits_only_re_export() -> None:
    """Issue 31: an ``__init__.py`` holds a docstring and imports, no logic of its own."""
    logic = []
    for path in sorted(PACKAGE.rglob("__init__.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                logic.append(f"{path.relative_to(PACKAGE.parent)}: {node.name}")
    assert not logic, f"logic in package __init__ files: {logic}"
