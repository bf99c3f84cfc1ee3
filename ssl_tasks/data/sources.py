"""Ingestion sources, the part every modality shares: the ``SOURCES`` registry and its marks, the seeded
stratified split, and reading folders and tar archives in place (:class:`RootFiles`).

Every source is registered in ``SOURCES`` and has the signature
``fn(path, *, test_fraction, split_seed[, **options]) -> result``, where ``result`` is what the modality plug-in
named by the source's ``modality`` mark writes (:func:`source_kind`; unmarked: image). Sources read their input
in place (directories, tar archives, gzip files), never write anything, and describe the input in
``result.info`` deterministically (the path as given, content hashes; no timestamps), so two ingests of the same
input give byte-identical datasets.

The built-in sources live in their modality's package: ``ssl_tasks.modalities.<name>.sources``.
"""

from __future__ import annotations

import math
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.registry import Registry

SourceFn = Callable[..., Any]
SOURCES: Registry[SourceFn] = Registry("source")


def pathless(fn: SourceFn) -> SourceFn:
    """Mark a source that needs no input path."""
    fn.requires_path = False  # type: ignore[attr-defined]
    return fn


def requires_path(fn: SourceFn) -> bool:
    """Whether a registered source reads from a user-given path."""
    return bool(getattr(fn, "requires_path", True))


def source_kind(modality: str) -> Callable[[SourceFn], SourceFn]:
    """Mark a source that accepts ``**options`` and yields data of ``modality`` (unmarked: image, no options);
    the modality plug-in of that name writes what it returns."""

    def mark(fn: SourceFn) -> SourceFn:
        fn.takes_options = True  # type: ignore[attr-defined]
        fn.modality = modality  # type: ignore[attr-defined]
        return fn

    return mark


def takes_options(fn: SourceFn) -> bool:
    """Whether a registered source accepts options."""
    return bool(getattr(fn, "takes_options", False))


# --------------------------------------------------------------------------- splitting


def check_test_fraction(test_fraction: float) -> float:
    """Return ``test_fraction`` as a float, or raise UserError unless it lies in (0, 1)."""
    try:
        tf = float(test_fraction)
    except (TypeError, ValueError):
        raise UserError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}") from None
    if not 0.0 < tf < 1.0:
        raise UserError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    return tf


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded class-balanced split; returns sorted (train_idx, test_idx).

    Each class (and the unlabeled group, label -1) gives ``round(n * test_fraction)`` of its
    samples to test, so all-unlabeled data gets a plain seeded random split.
    """
    tf = check_test_fraction(test_fraction)
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    parts = [np.zeros(0, dtype=np.int64)]
    for c in np.unique(labels):  # sorted, so the rng draws are in a fixed order
        idx = np.flatnonzero(labels == c)
        n_test = int(math.floor(len(idx) * tf + 0.5))
        parts.append(rng.permutation(idx)[:n_test])
    test = np.sort(np.concatenate(parts)).astype(np.int64)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    train = np.flatnonzero(~is_test).astype(np.int64)
    if len(train) == 0 or len(test) == 0:
        raise UserError(
            f"test_fraction={tf} on {len(labels)} samples leaves the "
            f"{'train' if len(train) == 0 else 'test'} split empty"
        )
    return train, test


# --------------------------------------------------------------------------- containers


def visible(parts: Sequence[str]) -> bool:
    """False for hidden files/folders and macOS resource forks (``.x``, ``__MACOSX``)."""
    return all(not p.startswith(".") and p != "__MACOSX" for p in parts)


def open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path} is neither a directory nor a readable tar archive ({e})") from None


def tar_members(path: Path, tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Regular, visible members (later duplicates win, as on extraction), by name. An absolute member name is
    refused: stripping its ``/`` would file it under a folder of the archive's own (a class, for image folders)."""
    members: dict[str, tarfile.TarInfo] = {}
    try:
        for m in tf:
            if m.name.startswith("/"):
                raise UserError(f"{path}: member {m.name!r} has an absolute path; an archive must hold relative names")
            parts = PurePosixPath(m.name).parts
            if m.isfile() and not m.issparse() and parts and visible(parts):
                members["/".join(parts)] = m
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: corrupt tar archive ({e})") from None
    return [members[k] for k in sorted(members)]


def tar_read(path: Path, tf: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    try:
        f = tf.extractfile(m)
        data = f.read() if f is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}:{m.name}: cannot read archive member ({e})") from None
    if len(data) != m.size:
        raise UserError(f"{path}:{m.name}: truncated archive member ({len(data)} of {m.size} bytes)")
    return data


class RootFiles:
    """Files under a folder or inside a tar archive, by relative POSIX path; nothing outside the root is read.

    ``kind`` names the files in messages (``"video"``: "video root ..."); ``suffixes`` picks the candidates
    :meth:`list` returns (lower-cased suffixes; the suffix only picks candidates, decoding decides). ``strict``
    (the video sources): a symlink in the folder resolving outside it, or a tar member whose name holds ``..``,
    is a ``UserError`` before anything is read; otherwise (the speech sources) such a symlinked file is skipped,
    and so is a ``..`` member (``tar_members`` drops it as hidden). :meth:`resolve` checks a path given by the
    user (a table's row) the same way in both modes.
    """

    def __init__(self, root: Path, kind: str, suffixes: Sequence[str], strict: bool) -> None:
        self.root = Path(root)
        self.kind, self.suffixes, self.strict = kind, tuple(suffixes), strict
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if not self.root.exists():
            raise UserError(f"{kind} root {self.root} does not exist")
        if not self.root.is_dir():
            self.tar = open_tar(self.root)
            if strict:
                try:
                    names = self.tar.getnames()
                except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                    raise UserError(f"{self.root}: corrupt tar archive ({e})") from None
                escaping = [n for n in names if ".." in PurePosixPath(n).parts]
                if escaping:
                    raise UserError(f"{self.root}: member {escaping[0]!r} leaves the archive's root ('..'); "
                                    "refusing to read the archive")
            self.members = {"/".join(PurePosixPath(m.name).parts): m for m in tar_members(self.root, self.tar)}

    @property
    def container(self) -> str:
        return "tar" if self.tar is not None else "directory"

    def _walk(self) -> Iterator[str]:
        """Visible files under the folder (symlinked folders are not followed), relative POSIX paths."""
        inside = self.root.resolve()
        for top, dirs, files in os.walk(self.root):
            here = Path(top)
            dirs[:] = sorted(d for d in dirs if visible([d]))
            if self.strict:
                for name in dirs:  # not followed; one pointing outside is refused all the same
                    self._inside(here / name, inside)
            for name in sorted(f for f in files if visible([f])):
                p = here / name
                if self._inside(p, inside) and p.is_file():
                    yield p.relative_to(self.root).as_posix()

    def _inside(self, p: Path, inside: Path) -> bool:
        """Whether ``p`` stays inside the root; strict: a symlink leading out of it is a ``UserError``."""
        if p.is_symlink() and inside != p.resolve() and inside not in p.resolve().parents:
            if self.strict:
                raise UserError(f"{p} is a symlink to {p.resolve()}, outside the {self.kind} root {self.root}")
            return False
        return True

    def list(self) -> list[str]:
        """Visible files with one of the suffixes, sorted."""
        names = list(self.members) if self.tar is not None else list(self._walk())
        return sorted(n for n in names if PurePosixPath(n).suffix.lower() in self.suffixes)

    def resolve(self, rel: str, where: str) -> str:
        """``rel`` as a clean relative path inside the root, or a ``UserError`` (absolute, ``..``, outside)."""
        p = PurePosixPath(str(rel).replace("\\", "/"))
        if not str(rel) or p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
            raise UserError(f"{where}: path {rel!r} is absolute or leaves the {self.kind} root {self.root}")
        clean = "/".join(part for part in p.parts if part != ".")
        if self.tar is not None:
            if clean not in self.members:
                raise UserError(f"{where}: {clean!r} is not a file in the archive {self.root}")
            return clean
        full = (self.root / clean).resolve()
        if self.root.resolve() not in full.parents:
            raise UserError(f"{where}: path {rel!r} resolves to {full}, outside the {self.kind} root {self.root}")
        if not full.is_file():
            raise UserError(f"{where}: {self.root / clean} does not exist or is not a file")
        return clean

    def read(self, rel: str) -> bytes:
        if self.tar is not None:
            return tar_read(self.root, self.tar, self.members[rel])
        try:
            return (self.root / rel).read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {self.root / rel}: {e}") from None

    def where(self, rel: str) -> str:
        return f"{self.root}:{rel}" if self.tar is not None else str(self.root / rel)
