"""Image folders that survive bad files: a days-long run does not die on one broken JPEG.

Real folders hold bad files (a copy cut short by a full disk, a zero-byte file, an HTML error
page saved as ``.JPEG``). torchvision's ``ImageFolder`` raises on them inside a loader worker, and
the run dies with a traceback. :class:`TolerantImageFolder` instead **skips** an unreadable file,
**substitutes** the next readable sample in folder order (deterministic: the same index always
gives the same substitute, so resume and repeated epochs stay reproducible) and **says so**:
``__getitem__`` returns ``(image, target, bad)`` where ``bad`` is -1, or the index of the
unreadable file that was replaced. The engine's loader counts the bad files per epoch into the
run record and prints :func:`describe_bad` once per file.

A truncated file is a bad file: PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off, so a JPEG
cut short raises instead of training on grey padding.

Only reading and decoding the file is guarded (any exception there means the file is bad: PIL
raises ``OSError``, ``SyntaxError``, ``ValueError``, ``EOFError``, ``DecompressionBombError``
or ``struct.error`` depending on the format and the damage); the transform runs outside the
guard, so a bug in augmentation still fails loudly. More than :attr:`max_consecutive_bad`
unreadable files in a row is not a few bad files but a broken folder (unmounted, no
permission): that raises an error naming the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import UnidentifiedImageError
from torch.utils.data import Dataset, Subset
from torchvision.datasets import ImageFolder

from reproduce.errors import SrvError

__all__ = ["TolerantImageFolder", "describe_bad", "image_folder_of", "readable",
           "find_unreadable"]


class TolerantImageFolder(ImageFolder):
    """``torchvision.datasets.ImageFolder`` whose items are ``(image, target, bad)``.

    ``bad`` is -1 for a readable file; for an unreadable one the item is the next readable
    sample in folder order (wrapping around) with *its* target, and ``bad`` is the requested
    index, so every bad file is reported once per epoch, when it is drawn.
    """

    #: more unreadable files in a row than this is a broken folder, not a few bad files
    max_consecutive_bad = 100

    def _load(self, index: int) -> Any | None:
        path = self.samples[index][0]
        try:
            return self.loader(path)
        except Exception:  # any failure to read or decode the file: a bad file
            return None

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        n = len(self.samples)
        for step in range(min(n, self.max_consecutive_bad + 1)):
            j = (index + step) % n
            sample = self._load(j)
            if sample is None:
                continue
            target = self.samples[j][1]
            if self.transform is not None:
                sample = self.transform(sample)
            if self.target_transform is not None:
                target = self.target_transform(target)
            return sample, target, (index if step else -1)
        raise SrvError(f"{min(n, self.max_consecutive_bad + 1)} unreadable images in a row "
                       f"from {self.path_of(index)} on ({_reason(self, index)}): {self.root} "
                       f"looks broken (unmounted, no read permission, a failed copy); check it")

    def path_of(self, index: int) -> str:
        """The file of sample ``index`` (an index into this folder, as ``bad`` reports it)."""
        return self.samples[index][0]


def image_folder_of(dataset: Dataset) -> TolerantImageFolder | None:
    """The :class:`TolerantImageFolder` under ``dataset`` (through ``Subset`` wrappers), if any.

    ``bad`` indices are indices of this folder, not of a ``Subset`` around it."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset if isinstance(dataset, TolerantImageFolder) else None


def _reason(folder: TolerantImageFolder, index: int) -> str:
    try:
        folder.loader(folder.path_of(index))
    except UnidentifiedImageError:  # its message repeats the path
        return "not an image PIL can identify: empty, garbage or an unsupported format"
    except Exception as err:  # reported, not handled
        return f"{type(err).__name__}: {err}"
    return "readable now"  # fixed (or back online) since it failed


def describe_bad(dataset: Dataset, index: int) -> str:
    """The one-line warning for the unreadable file ``index`` (a ``bad`` value) of ``dataset``.

    Reads the file again to name what is wrong with it (done once per bad file, by the process
    that prints the warning)."""
    folder = image_folder_of(dataset)
    if folder is None:
        return f"unreadable sample {index}: skipped, replaced by the next readable one"
    return skipped_line(folder.path_of(index), _reason(folder, index))


def skipped_line(path: str, reason: str) -> str:
    """The warning for one unreadable file, named once in a run."""
    return (f"unreadable image {path} ({reason}): skipped, the next readable image of the "
            f"folder is used in its place; replace or delete the file")


# --- checking a folder up front (for pipelines that cannot skip a file while decoding) ------


def readable(path: str) -> bool:
    """Whether Pillow decodes ``path`` completely. JPEGs are decoded at 1/8 scale in the DCT
    domain (``Image.draft``), which still reads every byte of the entropy-coded data, so a
    truncated file fails as it would at full size, at a fraction of the cost."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (max(img.width // 8, 1), max(img.height // 8, 1)))
            img.load()
    except Exception:  # any failure to read or decode the file: a bad file
        return False
    return True


def _cache_file(root: str, paths: list[str]) -> Path:
    import hashlib
    import os

    key = hashlib.sha256("\n".join([os.path.abspath(root), *paths]).encode()).hexdigest()[:20]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "srv" / "image-checks" / f"{key}.json"


def find_unreadable(root: str, paths: list[str], processes: int = 1,
                    say: Any = print) -> list[int]:
    """Indices of the files ``root/paths[i]`` that do not decode, checked in ``processes``
    parallel processes; the answer is cached per folder and file list (``$XDG_CACHE_HOME`` or
    ``~/.cache``, ``srv/image-checks/``), so a resumed run does not check again. A file
    replaced in place under the same name is not rechecked: delete the cache file to force it.

    For the DALI loader, which cannot skip a file inside its pipeline (a corrupt JPEG stops or
    crashes it), so unreadable files are found and substituted before it reads them."""
    import json
    import os
    from multiprocessing import get_context

    from reproduce.utils.atomic import atomic_write_json

    cache = _cache_file(root, paths)
    try:
        return list(json.loads(cache.read_text())["unreadable"])
    except (OSError, ValueError, KeyError):
        pass
    say(f"checking that the {len(paths):,} images of {root} decode (once; cached in {cache})")
    full = [os.path.join(root, p) for p in paths]
    if processes > 1 and len(full) > 256:
        with get_context("fork").Pool(processes) as pool:
            ok = pool.map(readable, full, chunksize=256)
    else:
        ok = [readable(p) for p in full]
    bad = [i for i, good in enumerate(ok) if not good]
    try:
        atomic_write_json(cache, {"root": os.path.abspath(root), "files": len(paths),
                                  "unreadable": bad})
    except OSError:  # a read-only home: check again next time
        pass
    return bad
