"""srv's cache of derived, deterministic records, so a second call answers from disk instead of
rebuilding models: the catalogue's params / FLOPs counts (``srv flops``, ``srv table
complexity``), a recipe's measured facts (``srv recipes NAME``) and the grid cells whose meta
build passed (``srv ablate --dry-run``, ``srv claims --run --dry-run``).

The folder is ``$SRV_CACHE_DIR``, else ``$XDG_CACHE_HOME/srv``, else ``~/.cache/srv`` (the XDG
base-directory convention). An entry's key includes :func:`code_version`: a hash of the source
files that produce it and the versions of the libraries it depends on, so an edit to a stem or an
upgrade of timm / fvcore is a cache miss, never a stale number. A cache that cannot be written
(read-only home) is skipped silently: it only saves time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["cache_dir", "code_version", "json_key", "load", "store"]

ENV_CACHE_DIR = "SRV_CACHE_DIR"


def cache_dir() -> Path:
    """``$SRV_CACHE_DIR``, else ``$XDG_CACHE_HOME/srv``, else ``~/.cache/srv``."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "srv"


def code_version(files: Iterable[Path], packages: Iterable[str]) -> str:
    """A short hash of the given source files' bytes and the installed versions of
    ``packages`` (``importlib.metadata``, no import of the packages themselves)."""
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    for pkg in packages:
        try:
            h.update(f"{pkg}={version(pkg)}".encode())
        except PackageNotFoundError:
            h.update(f"{pkg}=?".encode())
    return h.hexdigest()[:16]


def json_key(key: dict[str, Any]) -> dict[str, Any]:
    """``key`` as it reads back from JSON (tuples become lists, numbers stay numbers), so it
    compares equal to a stored one; values JSON cannot hold are written as their ``str``."""
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def _path(kind: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / kind / f"{digest}.json"


def load(kind: str, key: dict[str, Any]) -> Any | None:
    """The value stored under ``key`` (a JSON-able dict), or None."""
    try:
        record = json.loads(_path(kind, key).read_text())
    except (OSError, ValueError):
        return None
    return record.get("value") if record.get("key") == key else None


def store(kind: str, key: dict[str, Any], value: Any) -> None:
    """Store ``value`` under ``key`` (atomically; nothing when the folder is not writable)."""
    from reproduce.utils.atomic import atomic_write_json

    try:
        atomic_write_json(_path(kind, key), {"key": key, "value": value})
    except OSError:
        pass
