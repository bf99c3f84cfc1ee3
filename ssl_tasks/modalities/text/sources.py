"""Text ingestion sources: plain ``.txt`` files and TSV/CSV/JSONL tables into :class:`TextSplit`\\ s.

Both are registered in :data:`ssl_tasks.data.sources.SOURCES` and have the signature
``fn(path, *, test_fraction, split_seed, **options) -> TextSourceResult``; each validates its
own options before reading anything. Input bytes are decoded as UTF-8 with ``errors="replace"``:
undecodable bytes become U+FFFD and are left for validation to report rather than failing the
ingest. ``info`` is deterministic (the path as given, sha256 of every input file, the options),
so two ingests of the same input give byte-identical datasets.

Sources:

* ``text``: a ``.txt`` file or a folder of them; one text per line, paragraph or file; unlabeled.
* ``text_table``: a ``.tsv``/``.csv``/``.jsonl`` table (seeded, stratified split) or a folder
  with ``train.<ext>`` plus a test file (official split).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.data.shards import UNLABELED
from ssl_tasks.data.sources import SOURCES, source_kind, stratified_split
from ssl_tasks.data.tables import TABLE_FORMATS, decode_text, table_rows
from ssl_tasks.modalities.text.shards import TextSplit

REPLACEMENT = "\ufffd"
TEST_STEMS = ("test", "dev", "validation")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class TextSourceResult:
    """What a text source hands to the writer: splits, class names, provenance."""

    splits: dict[str, TextSplit]
    label_names: list[str]
    info: dict[str, Any]


_takes_options = source_kind("text")  # the mark of a text source


# --------------------------------------------------------------------------- options


def _options(source: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults), key=str)
    if unknown:
        raise UserError(f"source {source!r}: unknown option {unknown[0]!r}; valid: {', '.join(sorted(defaults))}")
    return {**defaults, **given}


def _choice(source: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UserError(f"source {source!r}: option {name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _name(source: str, name: str, value: Any, *, optional: bool = False) -> str | None:
    """A column or file name option (YAML may have parsed ``1`` as an int)."""
    if value is None and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise UserError(f"source {source!r}: option {name} must be a non-empty name; got {value!r}")
    return value


# --------------------------------------------------------------------------- shared helpers


def _split_indices(n: int, test_fraction: float, seed: int, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices: seeded random, or the last ``test_fraction`` of units."""
    if how == "random":
        return stratified_split(np.full(n, UNLABELED), test_fraction, seed)
    n_test = int(math.floor(n * test_fraction + 0.5))
    if n_test in (0, n):
        empty = "test" if n_test == 0 else "train"
        raise UserError(f"test_fraction={test_fraction} on {n} texts leaves the {empty} split empty")
    return np.arange(n - n_test), np.arange(n - n_test, n)


def _take(texts: list[str], labels: np.ndarray, idx: np.ndarray) -> TextSplit:
    return TextSplit(texts=[texts[i] for i in idx], labels=labels[idx])


def _n_replaced(splits: dict[str, TextSplit]) -> int:
    return sum(REPLACEMENT in t for s in splits.values() for t in s.texts)


# --------------------------------------------------------------------------- plain text


def _txt_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".txt" and not p.name.startswith(".")),
            key=lambda p: p.name,
        )
        if not files:
            raise UserError(f"no .txt files in folder {path}")
        return files
    if path.suffix.lower() != ".txt":
        raise UserError(
            f"{path}: source 'text' reads .txt files (or a folder of them); "
            f"for {', '.join(TABLE_FORMATS)} tables use source 'text_table'"
        )
    return [path]


def _units(content: str, unit: str) -> list[str]:
    """Lines (non-blank), paragraphs (blocks between blank lines) or the whole file (stripped)."""
    content = content.replace("\r\n", "\n").replace("\r", "\n")
    if unit == "file":
        return [content.strip()]
    lines = content.split("\n")  # not splitlines(): that also splits on U+2028, \x1c, ...
    if unit == "line":
        return [line for line in lines if line.strip()]
    paragraphs: list[str] = []
    block: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            block.append(line)
        elif block:
            paragraphs.append("\n".join(block))
            block = []
    return paragraphs


@SOURCES.register("text")
@_takes_options
def text(path: Path | None, *, test_fraction: float, split_seed: int, **options: Any) -> TextSourceResult:
    """Plain UTF-8 text: a ``.txt`` file or a folder of them (sorted by name), unlabeled.

    Options: ``unit`` = ``line`` (each non-blank line), ``paragraph`` (blank-line-separated
    blocks) or ``file``; ``split`` = ``random`` (seeded) or ``tail`` (the last ``test_fraction``
    of units is test: the convention for contiguous text such as Tiny Shakespeare).
    """
    opts = _options("text", options, {"unit": "line", "split": "random"})
    unit = _choice("text", "unit", opts["unit"], ("line", "paragraph", "file"))
    how = _choice("text", "split", opts["split"], ("random", "tail"))
    assert path is not None
    texts: list[str] = []
    digests: dict[str, str] = {}
    for p in _txt_files(path):
        content, digests[p.name] = decode_text(p)
        texts.extend(_units(content, unit))
    if not texts:
        raise UserError(f"{path} is empty: no texts found (unit={unit})")
    labels = np.full(len(texts), UNLABELED, dtype=np.int64)
    train, test = _split_indices(len(texts), test_fraction, split_seed, how)
    splits = {"train": _take(texts, labels, train), "test": _take(texts, labels, test)}
    return TextSourceResult(
        splits=splits,
        label_names=[],
        info={
            "format": "text",
            "path": str(path),
            "container": "directory" if path.is_dir() else "file",
            "files_sha256": digests,
            "options": opts,
            "split": how,
            "num_texts": len(texts),
            "texts_with_replacement_char": _n_replaced(splits),
        },
    )


# --------------------------------------------------------------------------- tables


def _table_format(path: Path) -> str:
    try:
        return TABLE_FORMATS[path.suffix.lower()]
    except KeyError:
        raise UserError(
            f"{path}: unsupported table extension {path.suffix!r}; source 'text_table' reads "
            f"{', '.join(TABLE_FORMATS)} (plain text: source 'text')"
        ) from None


def _scrub(value: str) -> str:
    """Lone surrogates (JSON ``"\\ud800"``) cannot be stored as UTF-8: they become U+FFFD too."""
    return _SURROGATE.sub(REPLACEMENT, value)


def _read_table(
    path: Path, text_column: str, label_column: str | None, hint: str = ""
) -> tuple[list[str], list[str] | None, str]:
    """(stripped texts, stripped label strings or None, sha256) of one table file.

    Empty text cells are kept (as "") for validation to report; an empty label is an error.
    """
    fmt = _table_format(path)
    content, digest = decode_text(path)
    needed = [(col, option) for col, option in ((text_column, "text_column"), (label_column, "label_column"))
              if col is not None]
    texts: list[str] = []
    labels: list[str] = []
    for n, row in table_rows(path, fmt, content, needed, hint):
        value = row[text_column]
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise UserError(f"{path}:{n}: {text_column!r} must be a string, got {type(value).__name__}")
        texts.append(_scrub(value).strip())
        if label_column is None:
            continue
        label = row[label_column]
        if isinstance(label, int) and not isinstance(label, bool):
            label = str(label)
        if label is not None and not isinstance(label, str):
            raise UserError(f"{path}:{n}: label {label_column!r} must be a string or an integer, got {label!r}")
        label = _scrub(label or "").strip()
        if not label:
            raise UserError(f"{path}:{n}: empty label in {label_column!r}; with label_column set every row needs one")
        labels.append(label)
    if not texts:
        raise UserError(f"{path} is empty: no rows")
    return texts, (labels if label_column is not None else None), digest


def _label_names(values: list[str]) -> list[str]:
    """Distinct labels, sorted numerically when all are integers, else lexicographically."""
    distinct = set(values)
    if all(_INTEGER.fullmatch(v) for v in distinct):
        return sorted(distinct, key=lambda v: (int(v), v))
    return sorted(distinct)


def _folder_files(path: Path, test_file: str | None) -> tuple[Path, Path, str]:
    """(train file, test file, hint for a missing column in a default-picked test file)."""
    trains = [path / f"train{ext}" for ext in TABLE_FORMATS if (path / f"train{ext}").is_file()]
    if not trains:
        raise UserError(
            f"{path}: no {', '.join('train' + e for e in TABLE_FORMATS)} in the folder "
            "(a table folder holds a train file and a test, dev or validation file)"
        )
    if len(trains) > 1:
        raise UserError(f"{path}: ambiguous, found {' and '.join(p.name for p in trains)}; keep one train file")
    train = trains[0]
    if test_file is not None:
        test = path / test_file
        if not test.is_file():
            raise UserError(f"test_file {test_file!r} not found in {path}")
        if test.resolve() == train.resolve():
            raise UserError(f"test_file {test_file!r} is the train file; name a different file")
        return train, test, ""
    candidates = [path / f"{stem}{train.suffix}" for stem in TEST_STEMS if (path / f"{stem}{train.suffix}").is_file()]
    if not candidates:
        names = ", ".join(f"{stem}{train.suffix}" for stem in TEST_STEMS)
        raise UserError(f"{path}: found {train.name} but no {names}; name the test file with the option test_file")
    others = candidates[1:]
    hint = (
        f"; {candidates[0].name} was picked as the test split by default: to use "
        f"{others[0].name if others else 'another file'} instead pass the option test_file="
        f"{others[0].name if others else '<file>'}"
    )
    return train, candidates[0], hint


@SOURCES.register("text_table")
@_takes_options
def text_table(path: Path | None, *, test_fraction: float, split_seed: int, **options: Any) -> TextSourceResult:
    """A TSV/CSV/JSONL table of texts (and labels), by extension.

    Options: ``text_column`` (default ``text``), ``label_column`` (default none: unlabeled),
    ``test_file``. A file is split at random (stratified when labelled); a folder gives the
    official split: ``train.<ext>`` and ``test_file``, else the first of ``test``, ``dev``,
    ``validation`` with that extension (``test_fraction`` is then unused).
    """
    opts = _options("text_table", options, {"text_column": "text", "label_column": None, "test_file": None})
    text_column = _name("text_table", "text_column", opts["text_column"])
    label_column = _name("text_table", "label_column", opts["label_column"], optional=True)
    test_file = _name("text_table", "test_file", opts["test_file"], optional=True)
    assert path is not None and text_column is not None
    if label_column == text_column:
        raise UserError(f"source 'text_table': text_column and label_column are both {text_column!r}")
    opts = {"text_column": text_column, "label_column": label_column, "test_file": test_file}
    if path.is_dir():
        train_file, test_path, hint = _folder_files(path, test_file)
        files = {"train": train_file, "test": test_path}
        tables = {
            "train": _read_table(train_file, text_column, label_column),
            "test": _read_table(test_path, text_column, label_column, hint),
        }
        how = "official"
    else:
        if test_file is not None:
            raise UserError("option test_file needs a folder as path (it names a file inside it)")
        files = {"all": path}
        tables = {"all": _read_table(path, text_column, label_column)}
        how = "random" if label_column is None else "stratified"

    names = _label_names([v for _, lab, _ in tables.values() for v in lab or []]) if label_column else []
    lookup = {name: k for k, name in enumerate(names)}
    encoded = {
        split: TextSplit(texts, np.array([lookup[v] for v in lab or []] or [UNLABELED] * len(texts), dtype=np.int64))
        for split, (texts, lab, _) in tables.items()
    }
    if how == "official":
        splits = encoded
    else:
        texts, labels = encoded["all"].texts, encoded["all"].labels
        train, test = stratified_split(labels, test_fraction, split_seed)
        splits = {"train": _take(texts, labels, train), "test": _take(texts, labels, test)}
    return TextSourceResult(
        splits=splits,
        label_names=names,
        info={
            "format": _table_format(files["train" if how == "official" else "all"]),
            "path": str(path),
            "container": "directory" if how == "official" else "file",
            "files": {split: p.name for split, p in files.items()},
            "files_sha256": {p.name: tables[split][2] for split, p in files.items()},
            "options": opts,
            "split": how,
            "num_texts": sum(len(s.texts) for s in splits.values()),
            "texts_with_replacement_char": _n_replaced(splits),
        },
    )
