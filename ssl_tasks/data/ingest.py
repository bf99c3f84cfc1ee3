"""The ingest stage: read a source into the canonical shard format (all or nothing).

Importing this module registers every built-in modality, and with it every built-in source in ``SOURCES``.

A source's ``modality`` attribute (image when absent) names the modality plug-in whose ``write_dataset`` writes
what the source returns (image, text or pair shards); only sources marked so take ``options``.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import check_replaceable, read_manifest
from ssl_tasks.data.sources import SOURCES, SourceFn, check_test_fraction, requires_path, takes_options
from ssl_tasks.modalities import builtin as _builtin  # noqa: F401  (every built-in modality registers its sources)


def ingest(
    source: str,
    path: str | Path | None,
    out: Path,
    *,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    shard_size: int = 8192,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Ingest ``path`` with the named source into dataset directory ``out``; return the manifest.

    Arguments are checked before any data is read. ``out`` is only created (atomically) once the
    whole dataset is written; on any failure nothing is left behind. An existing ``out`` is
    replaced only if it is an empty directory or holds nothing but an ingested dataset (any modality);
    see ``_check_out``.
    ``options`` go to the source (text and image-caption sources; each names its valid options).
    """
    fn = SOURCES.get(source)
    opts = _check_options(source, fn, options)
    tf = check_test_fraction(test_fraction)
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or split_seed < 0:
        raise UserError(f"split_seed must be a non-negative integer, got {split_seed!r}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise UserError(f"shard_size must be an integer >= 1, got {shard_size!r}")
    out = Path(out)
    in_path = None if path is None else Path(path)
    if requires_path(fn):
        if in_path is None:
            raise UserError(f"source {source!r} needs a path to read from")
        if not in_path.exists():
            raise UserError(f"path {in_path} does not exist")
        _check_not_inside(in_path, out)
        if isinstance(opts.get("root"), (str, Path)):  # image-text tables: the images' folder must survive too
            root = Path(opts["root"])
            _check_not_inside(root if root.is_absolute() else (in_path if in_path.is_dir() else in_path.parent) / root,
                              out)
    _check_out(out)

    result = fn(in_path, test_fraction=tf, split_seed=int(split_seed), **opts)
    for split, data in result.splits.items():
        _check_labels(source, split, data, len(result.label_names))
    meta = {"name": source, **result.info, "test_fraction": tf, "split_seed": int(split_seed)}
    from ssl_tasks.core.modality import get_modality

    return get_modality(getattr(fn, "modality", "image")).write_dataset(out, result, meta, int(shard_size))


def _check_options(source: str, fn: SourceFn, options: dict[str, Any] | None) -> dict[str, Any]:
    """Options as a dict with string keys; a non-empty one only for sources that take options."""
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise UserError(f"options must be a mapping of option names to values, got {options!r}")
    if options and not takes_options(fn):
        raise UserError(f"source {source!r} takes no options; got {', '.join(sorted(options))}")
    return dict(options)


def _check_out(out: Path) -> None:
    """Refuse to replace ``out`` unless it is an empty folder or holds nothing but a dataset of ours.

    A dataset of ours: a ``manifest.json`` that parses and names a known format, plus only the files its
    splits list, in the split folders it names (a format whose manifest lists no files for a split owns
    that split's folder). Anything else there, and the working directory or a folder holding it, is
    refused with one line naming what is in the way, before any data is read.
    """
    check_replaceable(out)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise UserError(f"output {out} exists and is not a directory; choose another --out")
    if not any(out.iterdir()):
        return
    if not (out / "manifest.json").is_file():
        raise UserError(f"refusing to overwrite {out}: it exists and is not an ingested dataset (no manifest.json); "
                        "choose another --out or empty it")
    from ssl_tasks.core.modality import modality_of

    try:
        modality_of(out)  # parses the manifest and knows its format
        splits = read_manifest(out).get("splits")
    except UserError as e:
        raise UserError(f"refusing to overwrite {out}: it is not an ingested dataset ({e})") from None
    foreign = _foreign_entries(out, splits if isinstance(splits, dict) else {})
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise UserError(f"refusing to overwrite {out}: it holds {', '.join(foreign[:3])}{more}, which its "
                        "manifest.json does not list; move them away or choose another --out")


def _foreign_entries(out: Path, splits: dict[str, Any]) -> list[str]:
    """Paths under ``out`` (relative, sorted) that are not the manifest, a split folder or a file it lists."""
    listed: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, str):
            rel = PurePosixPath(value)
            if not rel.is_absolute() and ".." not in rel.parts:
                listed.add(rel.as_posix())
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    collect(splits)
    owned = {s for s in splits if isinstance(s, str) and not any(f.startswith(f"{s}/") for f in listed)}
    dirs = set(splits) | {p.as_posix() for f in listed for p in PurePosixPath(f).parents if p.as_posix() != "."}
    foreign: list[str] = []
    for top, subdirs, files in os.walk(out):  # symlinks are not followed: one to a folder is listed as an entry
        rel_top = Path(top).relative_to(out).as_posix()
        if rel_top in owned:
            subdirs[:] = []
            continue
        for name in sorted(subdirs):
            rel = name if rel_top == "." else f"{rel_top}/{name}"
            if rel not in dirs or Path(top, name).is_symlink():
                foreign.append(rel + "/")
                subdirs.remove(name)
        for name in files:
            rel = name if rel_top == "." else f"{rel_top}/{name}"
            if rel not in listed and rel != "manifest.json":
                foreign.append(rel)
    return sorted(foreign)


def _check_not_inside(in_path: Path, out: Path) -> None:
    """The output replaces ``out`` wholesale, so it must not contain the input."""
    src, dst = in_path.resolve(), out.resolve()
    if src == dst or dst in src.parents:
        raise UserError(f"output {out} would contain the input {in_path}; choose an --out outside it")


def _check_labels(source: str, split: str, data: Any, n_classes: int) -> None:
    labels = np.asarray(data.labels)
    if len(labels) and (labels.min() < -1 or labels.max() >= n_classes):
        raise UserError(
            f"source {source!r} split {split!r}: labels span {labels.min()}..{labels.max()} "
            f"but there are {n_classes} label names"
        )
