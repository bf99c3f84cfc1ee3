"""Speech ingestion sources: WAV/FLAC clips from a folder or tar (``audio_folder``) or listed in a table
(``audio_table``), decoded, mixed down, resampled and cropped into :class:`AudioSplit`\\ s.

Both are registered in :data:`ssl_tasks.data.sources.SOURCES` with the signature
``fn(path, *, test_fraction, split_seed, **options) -> AudioSourceResult``. Every clip is decoded with
``soundfile`` from its bytes: the content decides the decoder, never the file's extension (a text file named
``.wav`` is refused; a FLAC named ``.wav`` is read as FLAC). A file that does not decode as WAV or FLAC is a
``UserError`` naming it (all of them, checked before anything is written); a clip that decodes to nothing, at another
sample rate or with more channels than declared is kept and reported by validation (``checks.py``), row by row.

Resampling: ``scipy.signal.resample_poly`` (a polyphase FIR with a Kaiser window at the exact rational ratio, e.g.
2/1 for 8 -> 16 kHz): numpy in, numpy out, deterministic, and what the ingest (numpy throughout) needs;
``torchaudio.functional.resample`` would do the same work through a torch round trip.

Options (both sources):

* ``sample_rate``: the rate clips are stored at (resampled to it); unset: the first clip's rate (what the files
  must have is ``validation.sample_rate``, checked row by row);
* ``mono``: mix several channels down by their mean (default ``true``; ``false`` refuses multi-channel clips);
* ``num_samples`` (fixed length: longer clips are cropped, shorter ones zero-padded; their ``lengths`` say how
  much is real) or ``max_seconds`` (longer clips cropped; rows padded to the longest clip); ``crop`` = ``center``,
  ``start`` or ``loudest`` (the window with the most energy);
* ``dtype``: how the waveforms are stored: ``int16`` (default) or ``float16``;
* splits: ``split_column`` (a table column of split names, e.g. FSDD's upstream ``split``), else ``split_by`` =
  ``label`` (seeded, class-stratified ``test_fraction``) or ``group`` (whole groups, e.g. speakers, go to test).

``audio_table`` also takes ``path_column``, ``label_column``, ``group_column`` (a second label column kept per
row, e.g. FSDD's ``speaker``) and ``root``: the folder or tar archive the paths are relative to (default: the
table's folder); a path that is absolute or leaves the root (``..``, a symlink pointing out) is refused.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.data.shards import UNLABELED
from ssl_tasks.data.sources import SOURCES, RootFiles, source_kind, stratified_split
from ssl_tasks.data.tables import TABLE_FORMATS, decode_text, table_rows

NAME = "speech"
AUDIO_SUFFIXES = (".wav", ".wave", ".flac")
FORMATS = ("WAV", "WAVEX", "FLAC")  # soundfile's container names it accepts
CLIP_LEVEL = 0.999  # |sample| at or above this (of full scale) counts as clipped
SPLIT_NAMES = ("train", "test", "val")

_takes_options = source_kind(NAME)


@dataclass
class AudioSplit:
    """One split as the writer consumes it: float32 mono clips at the stored rate (already cropped) and their rows."""

    ids: list[str]
    waves: list[np.ndarray]
    labels: np.ndarray
    groups: np.ndarray
    source_rate: np.ndarray  # the file's own sample rate
    source_channels: np.ndarray
    source_seconds: np.ndarray  # the file's duration before cropping
    clip_fraction: np.ndarray  # share of the file's samples at full scale


@dataclass
class AudioSourceResult:
    splits: dict[str, AudioSplit]
    label_names: list[str]
    group_names: list[str]
    sample_rate: int
    num_samples: int  # the stored row width
    dtype: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Clip:
    """A decoded clip, before cropping."""

    id: str
    wave: np.ndarray  # (n,) float32 mono at the target rate
    source_rate: int
    source_channels: int
    source_seconds: float
    clip_fraction: float


# --------------------------------------------------------------------------- options


DEFAULTS: dict[str, Any] = {"sample_rate": None, "mono": True, "num_samples": None, "max_seconds": None,
                            "crop": "center", "dtype": "int16", "split_column": None, "split_by": "label"}
TABLE_DEFAULTS: dict[str, Any] = {**DEFAULTS, "path_column": "path", "label_column": None, "group_column": None,
                                  "root": None}


def _options(source: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults), key=str)
    if unknown:
        raise UserError(f"source {source!r}: unknown option {unknown[0]!r}; valid: {', '.join(sorted(defaults))}")
    opts = {**defaults, **given}
    for name in ("sample_rate", "num_samples"):
        v = opts[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise UserError(f"source {source!r}: option {name} must be a positive integer or null; got {v!r}")
    v = opts["max_seconds"]
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf):
        raise UserError(f"source {source!r}: option max_seconds must be a positive number or null; got {v!r}")
    if opts["num_samples"] is not None and v is not None:
        raise UserError(f"source {source!r}: set num_samples (fixed length) or max_seconds (a cap), not both")
    for name, choices in (("crop", ("center", "start", "loudest")), ("dtype", ("int16", "float16")),
                          ("split_by", ("label", "group"))):
        if opts[name] not in choices:
            raise UserError(f"source {source!r}: option {name} must be one of {', '.join(choices)}; got "
                            f"{opts[name]!r}")
    if not isinstance(opts["mono"], bool):
        raise UserError(f"source {source!r}: option mono must be true or false; got {opts['mono']!r}")
    return opts


# --------------------------------------------------------------------------- decoding


def decode_audio(data: bytes, where: str) -> tuple[np.ndarray, int]:
    """(float32 (frames, channels) in [-1, 1] for integer formats, sample rate) of WAV or FLAC bytes.

    The bytes decide: libsndfile reads the header, whatever the name says. Anything else is a ``UserError``.
    """
    import soundfile as sf

    if not data:
        raise UserError(f"{where}: empty file (0 bytes), not audio")
    try:
        info = sf.info(io.BytesIO(data))
        x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as e:
        why = getattr(e, "error_string", None) or str(e)  # libsndfile's reason, without the buffer's repr
        raise UserError(f"{where}: not a decodable WAV or FLAC file ({why})") from None
    if info.format not in FORMATS:
        raise UserError(f"{where}: {info.format} audio ({info.format_info}); the speech sources read WAV or FLAC")
    return np.ascontiguousarray(x, dtype=np.float32), int(rate)


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``wave`` (n,) from ``rate`` to ``target`` Hz (scipy's polyphase filter at the reduced ratio)."""
    if rate == target or len(wave) == 0:
        return wave
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(wave, target // g, rate // g).astype(np.float32)


def to_clip(data: bytes, where: str, clip_id: str, opts: dict[str, Any], target: int) -> Clip:
    x, rate = decode_audio(data, where)  # (n, C)
    n, channels = x.shape
    if channels > 1 and not opts["mono"]:
        raise UserError(f"{where}: {channels} channels; set the source option mono: true to mix them down")
    clipped = float((np.abs(x) >= CLIP_LEVEL).mean()) if x.size else 0.0
    wave = x.mean(axis=1) if channels > 1 else x[:, 0]  # (n,)
    return Clip(clip_id, resample(np.ascontiguousarray(wave, dtype=np.float32), rate, target), rate, channels,
                n / rate if rate else 0.0, clipped)


def crop(wave: np.ndarray, width: int, how: str) -> np.ndarray:
    """``wave`` cut to at most ``width`` samples: its middle (``center``), its start, or the window holding the
    most energy (``loudest``; the earliest of equals), which keeps the word of a clip with a long silent tail."""
    if len(wave) <= width:
        return wave
    if how == "loudest":
        energy = np.concatenate([[0.0], np.cumsum(np.square(wave, dtype=np.float64))])  # (n + 1,)
        start = int(np.argmax(energy[width:] - energy[:-width]))
    else:
        start = (len(wave) - width) // 2 if how == "center" else 0
    return wave[start : start + width]


# --------------------------------------------------------------------------- containers


def _rate_of(data: bytes, where: str) -> int:
    import soundfile as sf

    try:
        return int(sf.info(io.BytesIO(data)).samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError):
        return 0  # decode_audio names the file


def _files(root: Path) -> RootFiles:
    """An audio folder or archive (``RootFiles``: a symlinked file resolving outside the folder is skipped)."""
    return RootFiles(root, "audio", AUDIO_SUFFIXES, strict=False)


def _decode_all(files: RootFiles, rels: list[str], opts: dict[str, Any]) -> tuple[list[Clip], int, str]:
    """Every clip decoded at one target rate, plus the sha256 of all input bytes; every undecodable file is
    named in one ``UserError`` (up to 5 of them) before anything is written."""
    target = opts["sample_rate"]
    clips: list[Clip] = []
    bad: list[str] = []
    digest = hashlib.sha256()
    for rel in rels:
        data = files.read(rel)
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        if target is None:
            target = _rate_of(data, files.where(rel)) or None
        try:
            clips.append(to_clip(data, files.where(rel), rel, opts, target or 1))
        except UserError as e:
            bad.append(str(e))
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise UserError(f"{len(bad)} of {len(rels)} audio files cannot be ingested{more}: " + "; ".join(bad[:5]))
    if target is None:
        raise UserError(f"{files.root}: no audio files found")
    return clips, int(target), digest.hexdigest()


# --------------------------------------------------------------------------- splits and results


def _names(values: list[str]) -> tuple[list[str], np.ndarray]:
    """Sorted distinct names (numbers in numeric order) and each value's index; '' is unlabelled (-1)."""
    distinct = sorted({v for v in values if v != ""}, key=lambda s: (0, int(s), s) if s.lstrip("-").isdigit()
                      else (1, 0, s))
    index = {n: i for i, n in enumerate(distinct)}
    return distinct, np.array([index.get(v, UNLABELED) for v in values], dtype=np.int64)


def _split_rows(split_values: list[str] | None, labels: np.ndarray, groups: np.ndarray, opts: dict[str, Any],
                test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    if split_values is not None:
        names = sorted(set(split_values))
        odd = [s for s in names if s not in SPLIT_NAMES]
        if odd or "train" not in names:
            raise UserError(f"split column {opts['split_column']!r} must hold {', '.join(SPLIT_NAMES)} (and train); "
                            f"found {', '.join(names)}")
        v = np.array(split_values)
        return {s: np.flatnonzero(v == s) for s in SPLIT_NAMES if s in names}
    if opts["split_by"] == "group":
        if (groups < 0).any():
            raise UserError("split_by: group needs a group_column with a value on every row")
        ids = np.unique(groups)
        n_test = int(math.floor(len(ids) * test_fraction + 0.5))
        if n_test in (0, len(ids)):
            raise UserError(f"test_fraction={test_fraction} of {len(ids)} groups leaves a split empty")
        test_groups = np.random.default_rng(seed).permutation(ids)[:n_test]
        is_test = np.isin(groups, test_groups)
        return {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}
    train, test = stratified_split(labels, test_fraction, seed)
    return {"train": train, "test": test}


def _result(clips: list[Clip], labels: list[str], groups: list[str], split_values: list[str] | None,
            opts: dict[str, Any], rate: int, test_fraction: float, seed: int, info: dict[str, Any]) -> AudioSourceResult:
    label_names, y = _names(labels)
    group_names, gid = _names(groups)
    if opts["num_samples"] is not None:
        width = int(opts["num_samples"])
    else:
        longest = max(len(c.wave) for c in clips)
        width = longest if opts["max_seconds"] is None else min(longest, int(round(opts["max_seconds"] * rate)))
    width = max(width, 1)
    splits = {}
    for name, idx in _split_rows(split_values, y, gid, opts, test_fraction, seed).items():
        part = [clips[i] for i in idx]
        splits[name] = AudioSplit(
            ids=[c.id for c in part], waves=[crop(c.wave, width, opts["crop"]) for c in part], labels=y[idx],
            groups=gid[idx], source_rate=np.array([c.source_rate for c in part], dtype=np.int64),
            source_channels=np.array([c.source_channels for c in part], dtype=np.int64),
            source_seconds=np.array([c.source_seconds for c in part], dtype=np.float64),
            clip_fraction=np.array([c.clip_fraction for c in part], dtype=np.float64))
    return AudioSourceResult(splits, label_names, group_names, rate, width, opts["dtype"],
                             {**info, "options": opts, "num_clips": len(clips)})


# --------------------------------------------------------------------------- audio_folder


@SOURCES.register("audio_folder")
@_takes_options
def audio_folder(path: Path | None, *, test_fraction: float, split_seed: int, **options: Any) -> AudioSourceResult:
    """WAV/FLAC clips in a folder or tar archive: one sub-folder per class (its name is the label), or flat
    (unlabelled). Options: see the module docstring (no table columns)."""
    opts = _options("audio_folder", options, DEFAULTS)
    if opts["split_column"] is not None or opts["split_by"] == "group":
        raise UserError("source 'audio_folder' has no table columns: split_column and split_by: group need "
                        "source 'audio_table'")
    assert path is not None
    files = _files(path)
    rels = files.list()
    if not rels:
        raise UserError(f"{path}: no {'/'.join(AUDIO_SUFFIXES)} files found")
    parents = {PurePosixPath(r).parent for r in rels}
    depth = {len(p.parts) for p in parents}
    # class folders: a file's label is the folder holding it; all files in one folder: flat, unlabelled
    labels = [PurePosixPath(r).parent.name if len(parents) > 1 else "" for r in rels]
    if len(depth) > 1:
        raise UserError(f"{path}: audio files at different depths ({', '.join(sorted(str(p) for p in parents)[:4])});"
                        " use class folders of the same depth, or a flat folder")
    clips, rate, digest = _decode_all(files, rels, opts)
    info = {"format": "audio_folder", "path": str(path), "container": files.container, "sha256": digest,
            "layout": "class_folders" if len(parents) > 1 else "flat"}
    return _result(clips, labels, [""] * len(rels), None, opts, rate, test_fraction, split_seed, info)


# --------------------------------------------------------------------------- audio_table


def _table_format(path: Path) -> str:
    try:
        return TABLE_FORMATS[path.suffix.lower()]
    except KeyError:
        raise UserError(f"{path}: unsupported table extension {path.suffix!r}; source 'audio_table' reads "
                        f"{', '.join(TABLE_FORMATS)}") from None


def _cell(row: dict[str, Any], col: str | None) -> str:
    if col is None:
        return ""
    v = row[col]
    return "" if v is None else str(v).strip()


def read_table(path: Path, opts: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """The table's rows as {path, label, group, split} strings, and the table's sha256."""
    fmt = _table_format(path)
    content, digest = decode_text(path)
    cols = {"path": opts["path_column"], "label": opts["label_column"], "group": opts["group_column"],
            "split": opts["split_column"]}
    for key, col in cols.items():
        if col is not None and (not isinstance(col, str) or not col):
            raise UserError(f"source 'audio_table': option {key}_column must be a column name; got {col!r}")
    needed = [(col, f"{key}_column") for key, col in cols.items() if col is not None]
    rows = []
    for n, row in table_rows(path, fmt, content, needed):
        cells = {key: _cell(row, col) for key, col in cols.items()}
        if not cells["path"]:
            raise UserError(f"{path}:{n}: empty {opts['path_column']!r}")
        cells["line"] = str(n)
        rows.append(cells)
    if not rows:
        raise UserError(f"{path} has no rows")
    return rows, digest


@SOURCES.register("audio_table")
@_takes_options
def audio_table(path: Path | None, *, test_fraction: float, split_seed: int, **options: Any) -> AudioSourceResult:
    """A CSV/TSV/JSONL table of clip paths (under ``root``: a folder or a tar archive) and optional label, group
    and split columns. Options: see the module docstring."""
    opts = _options("audio_table", options, TABLE_DEFAULTS)
    assert path is not None
    if path.is_dir():
        raise UserError(f"{path} is a folder; source 'audio_table' reads a {', '.join(TABLE_FORMATS)} table")
    root = Path(opts["root"]) if opts["root"] is not None else path.parent
    if not root.is_absolute():
        root = path.parent / root
    rows, table_digest = read_table(path, opts)
    files = _files(root)
    rels = [files.resolve(r["path"], f"{path}:{r['line']}") for r in rows]
    dup = sorted({r for r in rels if rels.count(r) > 1}) if len(set(rels)) != len(rels) else []
    if dup:
        raise UserError(f"{path}: {len(dup)} clip(s) listed twice, e.g. {dup[0]!r}")
    clips, rate, digest = _decode_all(files, rels, opts)
    info = {"format": "audio_table", "path": str(path), "table_sha256": table_digest, "root": str(opts["root"]),
            "container": files.container, "sha256": digest}
    split_values = [r["split"] for r in rows] if opts["split_column"] is not None else None
    if opts["label_column"] is not None and any(r["label"] == "" for r in rows):
        bad = next(r for r in rows if r["label"] == "")
        raise UserError(f"{path}:{bad['line']}: empty label in column {opts['label_column']!r}")
    return _result(clips, [r["label"] for r in rows], [r["group"] for r in rows], split_values, opts, rate,
                   test_fraction, split_seed, info)


__all__ = ["AUDIO_SUFFIXES", "AudioSourceResult", "AudioSplit", "audio_folder", "audio_table", "crop", "decode_audio",
           "resample"]
