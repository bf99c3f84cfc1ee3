"""Ingestion sources, the part every modality shares: the ``SOURCES`` registry and its marks, the seeded
stratified split, and reading tar archives in place.

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
import tarfile
import zlib
from collections.abc import Callable, Sequence
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
