"""Video ingestion sources: the seeded ``moving_sprites`` benchmark built from Fashion-MNIST, and users' own clips
from a folder or tar archive (``video_folder``), decoded with PyAV into :class:`VideoSplit`\\ s of uint8
(N, T, C, H, W) clips.

Both are registered in :data:`ssl_tasks.data.sources.SOURCES` with the signature
``fn(path, *, test_fraction, split_seed, **options) -> VideoSourceResult``; each row of a split carries the facts
the validation suite (``checks.py``) reads: ``source_fps``, ``source_frames``, ``source_height``, ``source_width``.

``moving_sprites`` (path: a folder holding the four Fashion-MNIST IDX files, gzipped or not) is the Moving MNIST
protocol (Srivastava et al. 2015, arXiv:1502.04681) on Fashion-MNIST sprites: one sprite per clip, downscaled from
28x28 by an area mean, moving in a straight line at a constant speed and bouncing off the frame's edges (the
velocity component normal to the edge is reversed). Sprites of the train split come from the Fashion-MNIST train
images, those of the test split from its test images (``test_fraction`` and ``split_seed`` are not used). Each
clip's direction of motion is drawn from 8 bins of 45 degrees (bin ``k`` is ``k * 45`` degrees counter-clockwise
from "right", with a uniform jitter of +-``angle_jitter`` degrees) and its speed from ``speeds`` (px/frame, one
class each, +-``speed_jitter``); both are exactly balanced within a split (a seeded permutation of a repeated
cycle). The start position of the sprite's top-left corner is uniform over the positions that keep the whole
sprite inside the frame (and the bounces keep it there). Pixels: the sprite is
pasted at its position rounded to the nearest pixel (half up) in each frame, over a black (0) background (with
one sprite, the max of background and sprite is the sprite). The label ``direction`` is the direction of motion in
the first frame; ``first_bounce`` (per row) is the first frame whose position was reflected (-1: none). The sprite
images are drawn class-balanced too (a seeded cycle of the classes, then an image uniformly within its class), so
all three label sets are exactly balanced in both splits (up to the remainder of the division). Options:
``frames`` 16, ``size`` 32, ``sprite_size`` 14 (divides 28), ``train_clips`` 6000, ``test_clips`` 2000, ``seed``
0, ``speeds`` [1.0, 2.0] (label set ``speed``: slow, fast), ``speed_jitter`` 0.1, ``angle_jitter`` 10.0,
``fps`` 10.0 (the declared frame rate), ``label``: ``direction`` (the main label set; ``class`` and ``speed`` are
extra label sets) or ``class`` (``direction`` and ``speed`` extra). Two ingests with the same options are
byte-identical (numpy only, seeded ``default_rng``; each split has its own stream, so the test clips do not
depend on ``train_clips``). Rows are named ``clip-00000``, ... within each split.

``video_folder`` reads mp4/webm/avi/mkv/mov clips in one sub-folder per class (the folder name is the label) or
flat (unlabelled), from a folder or a .tar/.tar.gz archive, split by ``stratified_split`` (``test_fraction``,
``split_seed``). The suffix only picks candidate files: the bytes are probed by FFmpeg (through PyAV), and a file
that FFmpeg does not read as a video container (mp4/mov, matroska/webm, avi, mpeg-ts/ps, flv, ogg, asf), that has
no video stream or that decodes to no frame is a ``UserError`` naming it (every such file, checked before anything
is written). A clip whose decoding fails or ends after some frames (a truncated file) is kept, padded, and
recorded (``decode_error``, ``source_frames``) so that validation fails its row; damage past the frames a clip
needs is not looked for (nothing stored depends on it). Decoding reads frames from the start and
stops once ``frames * stride`` frames are decoded; every ``stride``-th frame is kept; a clip with fewer frames is
padded by repeating its last frame. Each frame is centre-cropped to a square (aspect ratio kept, the longer side
trimmed equally on both sides) and resized to ``size`` x ``size`` with PIL's bilinear filter (antialiased when
shrinking), in RGB or in grayscale (FFmpeg's ``gray``: the luma plane). ``source_frames`` is the stream's declared
frame count (mp4/avi headers) or, where the container declares none (webm/mkv) or decoding ended sooner, the
frames decoded; a frame-size change inside a clip is counted in ``size_changes``. The dataset's ``fps`` is the
most common source rate (the lowest of equals) divided by ``stride``. Options: ``frames`` 16, ``stride`` 1,
``size`` 32, ``grayscale`` false. Paths never leave the root: a symlink resolving outside the folder or a tar
member with ``..`` is a ``UserError``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import math
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.data.shards import UNLABELED
from ssl_tasks.data.sources import SOURCES, RootFiles, source_kind, stratified_split

NAME = "video"
VIDEO_SUFFIXES = (".mp4", ".m4v", ".webm", ".avi", ".mkv", ".mov")
# FFmpeg demuxer names that hold video (a format name such as "mov,mp4,m4a,3gp,3g2,mj2" lists several)
VIDEO_CONTAINERS = frozenset({"mov", "mp4", "matroska", "webm", "avi", "mpegts", "mpeg", "flv", "ogg", "asf"})
DIRECTIONS = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")
FASHION_MNIST_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                       "Ankle boot")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SPRITE_SOURCE = 28  # Fashion-MNIST images are 28x28

_takes_options = source_kind(NAME)


@dataclass
class VideoSplit:
    """One split as the writer consumes it."""

    ids: list[str]
    clips: np.ndarray  # uint8 (N, T, C, H, W)
    labels: np.ndarray  # int64 (N,): main label, -1 = unlabelled
    extra: np.ndarray  # int64 (N, K): the extra label sets, in ``label_sets`` order
    rows: list[dict[str, Any]]  # per clip: source_fps, source_frames, source_height, source_width, + source facts


@dataclass
class VideoSourceResult:
    splits: dict[str, VideoSplit]
    label_names: list[str]  # the main label set
    label_sets: dict[str, list[str]]  # the extra label sets, in column order of ``VideoSplit.extra``
    main_label: str
    frames: int
    channels: int
    height: int
    width: int
    fps: float
    synthetic: bool
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- options


def _options(source: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults), key=str)
    if unknown:
        raise UserError(f"source {source!r}: unknown option {unknown[0]!r}; valid: {', '.join(sorted(defaults))}")
    return {**defaults, **given}


def _int(source: str, opts: dict[str, Any], name: str, lo: int) -> int:
    v = opts[name]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise UserError(f"source {source!r}: option {name} must be an integer >= {lo}; got {v!r}")
    return int(v)


def _number(source: str, opts: dict[str, Any], name: str, lo: float, hi: float = math.inf,
            lo_open: bool = False) -> float:
    v = opts[name]
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v <= hi
    ok = ok and (v > lo if lo_open else v >= lo)
    if not ok:
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise UserError(f"source {source!r}: option {name} must be a number {bound}"
                        + (f" and <= {hi:g}" if hi < math.inf else "") + f"; got {v!r}")
    return float(v)


def _bool(source: str, opts: dict[str, Any], name: str) -> bool:
    if not isinstance(opts[name], bool):
        raise UserError(f"source {source!r}: option {name} must be true or false; got {opts[name]!r}")
    return bool(opts[name])


# --------------------------------------------------------------------------- moving_sprites

SPRITE_DEFAULTS: dict[str, Any] = {"frames": 16, "size": 32, "sprite_size": 14, "train_clips": 6000,
                                   "test_clips": 2000, "seed": 0, "speeds": [1.0, 2.0], "speed_jitter": 0.1,
                                   "angle_jitter": 10.0, "fps": 10.0, "label": "direction"}


def _sprite_options(given: dict[str, Any]) -> dict[str, Any]:
    src = "moving_sprites"
    opts = _options(src, given, SPRITE_DEFAULTS)
    out: dict[str, Any] = {"frames": _int(src, opts, "frames", 2), "size": _int(src, opts, "size", 2),
                           "sprite_size": _int(src, opts, "sprite_size", 1),
                           "train_clips": _int(src, opts, "train_clips", 1),
                           "test_clips": _int(src, opts, "test_clips", 1), "seed": _int(src, opts, "seed", 0),
                           "angle_jitter": _number(src, opts, "angle_jitter", 0.0, 22.0),
                           "fps": _number(src, opts, "fps", 0.0, lo_open=True), "label": opts["label"]}
    if SPRITE_SOURCE % out["sprite_size"] or out["sprite_size"] >= out["size"]:
        raise UserError(f"source {src!r}: option sprite_size must divide {SPRITE_SOURCE} (area mean of the 28x28 "
                        f"image) and be smaller than size {out['size']}; got {out['sprite_size']}")
    speeds = opts["speeds"]
    if (not isinstance(speeds, (list, tuple)) or not speeds or len(set(speeds)) != len(speeds)
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf for v in speeds)):
        raise UserError(f"source {src!r}: option speeds must be a list of distinct positive numbers (px/frame); "
                        f"got {speeds!r}")
    out["speeds"] = sorted(float(v) for v in speeds)
    out["speed_jitter"] = _number(src, opts, "speed_jitter", 0.0)
    if out["speed_jitter"] >= out["speeds"][0]:
        raise UserError(f"source {src!r}: option speed_jitter ({out['speed_jitter']:g}) must be below the slowest "
                        f"speed ({out['speeds'][0]:g}), or a sprite could stand still")
    if out["label"] not in ("direction", "class"):
        raise UserError(f"source {src!r}: option label must be direction or class; got {out['label']!r}")
    return out


def speed_names(speeds: list[float]) -> list[str]:
    """``slow``/``fast`` for two speeds, else ``<v> px/frame``."""
    return ["slow", "fast"] if len(speeds) == 2 else [f"{v:g} px/frame" for v in speeds]


def read_idx(path: Path, magic: int, ndim: int) -> tuple[np.ndarray, str]:
    """A strict IDX parser (gzipped by name or content): the uint8 array and the file's sha256."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e}") from None
    data = raw
    if raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{path}: not a valid gzip file ({e})") from None
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise UserError(f"{path}: not an IDX file of magic 0x{magic:08x} (truncated or another kind)")
    dims = struct.unpack(f">{ndim}i", data[4:header])
    if len(data) != header + math.prod(dims) or min(dims) < 1:
        raise UserError(f"{path}: IDX header says shape {dims} but the file holds {len(data) - header} bytes of data")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims), hashlib.sha256(raw).hexdigest()


def _idx_pair(folder: Path, split: str, digests: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for stem, magic, ndim in zip(IDX_FILES[split], (0x803, 0x801), (3, 1), strict=True):
        path = next((folder / n for n in (stem, stem + ".gz") if (folder / n).is_file()), None)
        if path is None:
            raise UserError(f"{folder}: missing {stem}[.gz]; moving_sprites reads a Fashion-MNIST IDX folder "
                            f"({', '.join(s for pair in IDX_FILES.values() for s in pair)})")
        arr, digests[path.name] = read_idx(path, magic, ndim)
        out.append(arr)
    images, labels = out
    if images.shape[1:] != (SPRITE_SOURCE, SPRITE_SOURCE) or len(images) != len(labels):
        raise UserError(f"{folder}: {split} images of shape {images.shape} with {len(labels)} labels; "
                        f"expected N x 28 x 28 images and N labels")
    return images, labels.astype(np.int64)


def downscale(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, s, s) area means (rounded half up) of uint8 (N, 28, 28) images, ``s`` dividing 28."""
    f = images.shape[-1] // size
    total = images.reshape(len(images), size, f, size, f).sum(axis=(2, 4), dtype=np.uint32)  # (N, s, s)
    return ((total + (f * f) // 2) // (f * f)).astype(np.uint8)


def bounce(u: np.ndarray, room: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``[0, room]`` of unfolded straight-line positions ``u`` reflected at 0 and ``room`` (a triangle
    wave), and how many reflections each has gone through (``floor(u / room)`` away from the start cell)."""
    folded = room - np.abs(np.mod(u, 2 * room) - room)
    return folded, np.abs(np.floor(u / room)).astype(np.int64)


def sprite_motion(rng: np.random.Generator, n: int, opts: dict[str, Any]) -> dict[str, np.ndarray]:
    """Seeded motion of ``n`` clips: direction bin, speed class, jittered angle (degrees) and speed, start and the
    per-frame integer top-left positions ``x``/``y`` (N, T) with the reflections ``bounces`` (N,) and first
    reflected frame ``first_bounce`` (N,; -1 none)."""
    room = float(opts["size"] - opts["sprite_size"])
    direction = rng.permutation(np.arange(n) % len(DIRECTIONS))
    speed_class = rng.permutation(np.arange(n) % len(opts["speeds"]))
    angle = direction * 45.0 + rng.uniform(-opts["angle_jitter"], opts["angle_jitter"], n)
    speed = np.asarray(opts["speeds"])[speed_class] + rng.uniform(-opts["speed_jitter"], opts["speed_jitter"], n)
    start = rng.uniform(0.0, room, (n, 2))  # (N, 2): x (column), y (row) of the top-left corner
    theta = np.deg2rad(angle)
    v = speed[:, None] * np.stack([np.cos(theta), -np.sin(theta)], axis=1)  # (N, 2): image rows grow downwards
    t = np.arange(opts["frames"], dtype=np.float64)
    u = start[:, None, :] + v[:, None, :] * t[None, :, None]  # (N, T, 2) unfolded
    pos, cells = bounce(u, room)  # (N, T, 2)
    reflected = cells.sum(axis=2)  # (N, T) reflections so far
    first = np.where(reflected.max(axis=1) > 0, np.argmax(reflected > 0, axis=1), -1)
    xy = np.clip(np.floor(pos + 0.5), 0, room).astype(np.int64)  # (N, T, 2) rounded half up
    return {"direction": direction, "speed_class": speed_class, "angle": angle, "speed": speed, "start": start,
            "x": xy[..., 0], "y": xy[..., 1], "bounces": reflected[:, -1], "first_bounce": first}


def render(sprites: np.ndarray, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, T, 1, size, size) clips: sprite ``i`` (N, s, s) pasted at top-left (``x[i, t]``, ``y[i, t]``) on a
    black frame."""
    n, s = len(sprites), sprites.shape[-1]
    clips = np.zeros((n, x.shape[1], size, size), dtype=np.uint8)
    i = np.arange(n)[:, None, None]  # (N, 1, 1)
    offs = np.arange(s)
    for t in range(x.shape[1]):
        rows = (y[:, t, None] + offs)[:, :, None]  # (N, s, 1)
        cols = (x[:, t, None] + offs)[:, None, :]  # (N, 1, s)
        clips[:, t][i, rows, cols] = sprites  # (N, s, s) into a view of frame t
    return clips[:, :, None]  # (N, T, 1, H, W)


def balanced_pick(rng: np.random.Generator, classes: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` images whose classes are exactly balanced (a seeded permutation of a repeated cycle of the
    classes present), each drawn uniformly within its class (without replacement while the class lasts)."""
    present = np.unique(classes)
    want = rng.permutation(np.arange(n) % len(present))  # (N,) index into ``present``
    pick = np.empty(n, dtype=np.int64)
    for j, c in enumerate(present):
        slots = np.flatnonzero(want == j)
        pool = np.flatnonzero(classes == c)
        pick[slots] = rng.choice(pool, size=len(slots), replace=len(slots) > len(pool))
    return pick


def _sprite_split(images: np.ndarray, classes: np.ndarray, n: int, rng: np.random.Generator, opts: dict[str, Any],
                  extra_names: list[str]) -> VideoSplit:
    pick = balanced_pick(rng, classes, n)  # (N,) the image each clip shows
    m = sprite_motion(rng, n, opts)
    clips = render(downscale(images[pick], opts["sprite_size"]), m["x"], m["y"], opts["size"])
    columns = {"direction": m["direction"], "class": classes[pick], "speed": m["speed_class"]}
    size, frames, fps = opts["size"], opts["frames"], opts["fps"]
    rows = [{"source_fps": fps, "source_frames": frames, "source_height": size, "source_width": size,
             "sprite": int(pick[i]), "angle": round(float(m["angle"][i]), 6), "speed": round(float(m["speed"][i]), 6),
             "start_x": round(float(m["start"][i, 0]), 6), "start_y": round(float(m["start"][i, 1]), 6),
             "bounces": int(m["bounces"][i]), "first_bounce": int(m["first_bounce"][i])} for i in range(n)]
    extra = np.stack([columns[k] for k in extra_names], axis=1).astype(np.int64)  # (N, K)
    return VideoSplit([f"clip-{i:05d}" for i in range(n)], clips, columns[opts["label"]].astype(np.int64), extra,
                      rows)


@SOURCES.register("moving_sprites")
@_takes_options
def moving_sprites(path: Path | None, *, test_fraction: float, split_seed: int, **options: Any) -> VideoSourceResult:
    """Fashion-MNIST sprites moving and bouncing in a black frame (see the module docstring); the splits are
    Fashion-MNIST's own, so ``test_fraction`` and ``split_seed`` are not used."""
    opts = _sprite_options(options)
    assert path is not None
    if not Path(path).is_dir():
        raise UserError(f"source 'moving_sprites' needs the Fashion-MNIST IDX folder; {path} is not a directory")
    digests: dict[str, str] = {}
    data = {split: _idx_pair(Path(path), split, digests) for split in IDX_FILES}
    n_classes = int(max(lab.max() for _, lab in data.values())) + 1
    fashion = n_classes <= len(FASHION_MNIST_NAMES) and "fashion" in Path(path).resolve().name.lower()
    class_names = list(FASHION_MNIST_NAMES[:n_classes]) if fashion else [str(c) for c in range(n_classes)]
    sets = {"direction": list(DIRECTIONS), "class": class_names, "speed": speed_names(opts["speeds"])}
    main = opts["label"]
    extra_names = sorted(k for k in sets if k != main)
    counts = {"train": opts["train_clips"], "test": opts["test_clips"]}
    splits = {split: _sprite_split(*data[split], counts[split], np.random.default_rng([opts["seed"], k]), opts,
                                   extra_names) for k, split in enumerate(IDX_FILES)}
    info = {"format": "moving_sprites", "path": str(path), "sha256": dict(sorted(digests.items())),
            "options": opts, "synthetic": True}
    return VideoSourceResult(splits, sets[main], {k: sets[k] for k in extra_names}, main, opts["frames"], 1,
                             opts["size"], opts["size"], opts["fps"], True, info)


# --------------------------------------------------------------------------- containers


def _files(root: Path) -> RootFiles:
    """A clip folder or archive (``RootFiles``, strict: an escaping symlink or ``..`` member is refused)."""
    return RootFiles(root, "video", VIDEO_SUFFIXES, strict=True)


# --------------------------------------------------------------------------- decoding


@dataclass
class Decoded:
    """A clip as stored: (T, C, size, size) uint8 frames and the facts of its file."""

    clip: np.ndarray
    fps: float
    source_frames: int
    source_height: int
    source_width: int
    size_changes: int  # distinct frame sizes among the decoded frames, minus one
    decode_error: str  # FFmpeg's message where decoding failed after some frames; '' otherwise


@contextlib.contextmanager
def _ffmpeg_errors() -> Iterator[None]:
    """FFmpeg's log routed through Python at ERROR level while decoding (its last message joins PyAV's exception
    text instead of going to stderr); the previous level is restored."""
    import av.logging

    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture():
            yield
    finally:
        av.logging.set_level(previous)


def square_frame(rgb: np.ndarray, size: int) -> np.ndarray:
    """The centre square of an (h, w[, 3]) uint8 frame, resized to (size, size[, 3]) (PIL bilinear)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = rgb[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(crop)
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR))


def decode_video(data: bytes, where: str, frames: int, stride: int, size: int, grayscale: bool) -> Decoded:
    """The first ``frames * stride`` frames of a video file's bytes, every ``stride``-th kept, each centre-cropped
    and resized; short clips padded with their last frame. Not a video, no video stream, no frame: ``UserError``."""
    import av

    if not data:
        raise UserError(f"{where}: empty file (0 bytes), not a video")
    needed = frames * stride
    kept: list[np.ndarray] = []
    sizes: set[tuple[int, int]] = set()
    first = (0, 0)
    decoded, error = 0, ""
    with _ffmpeg_errors():
        try:
            container = av.open(io.BytesIO(data), mode="r")
        except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{where}: not a decodable video file ({e})") from None
        with container:
            fmt = container.format
            if not set(fmt.name.split(",")) & VIDEO_CONTAINERS:
                raise UserError(f"{where}: FFmpeg reads it as {fmt.long_name} ({fmt.name}), not a video container "
                                "(mp4/mov, webm/mkv, avi, mpeg-ts, flv, ogg, asf)")
            stream = container.streams.best("video")  # FFmpeg's pick: not a cover picture when there is video
            if stream is None:
                raise UserError(f"{where}: {fmt.name} file without a video stream")
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            declared = int(stream.frames or 0)
            try:
                for frame in container.decode(stream):
                    if not sizes:
                        first = (frame.height, frame.width)
                    sizes.add((frame.height, frame.width))
                    if decoded % stride == 0:
                        x = frame.to_ndarray(format="gray" if grayscale else "rgb24")
                        kept.append(square_frame(x, size))
                    decoded += 1
                    if decoded >= needed:
                        break
            except (av.error.FFmpegError, ValueError) as e:
                error = str(e)
    if not kept:
        why = f": {error}" if error else ""
        raise UserError(f"{where}: no decodable video frame{why}")
    clip = np.stack(kept + [kept[-1]] * (frames - len(kept)))  # (T, H, W[, 3])
    clip = clip[:, None] if grayscale else clip.transpose(0, 3, 1, 2)  # (T, C, H, W)
    source_frames = decoded if error or decoded < needed else max(declared, decoded)
    return Decoded(np.ascontiguousarray(clip), round(fps, 6), source_frames, first[0], first[1], len(sizes) - 1,
                   error)


# --------------------------------------------------------------------------- video_folder

FOLDER_DEFAULTS: dict[str, Any] = {"frames": 16, "stride": 1, "size": 32, "grayscale": False}


def _folder_options(given: dict[str, Any]) -> dict[str, Any]:
    src = "video_folder"
    opts = _options(src, given, FOLDER_DEFAULTS)
    return {"frames": _int(src, opts, "frames", 1), "stride": _int(src, opts, "stride", 1),
            "size": _int(src, opts, "size", 1), "grayscale": _bool(src, opts, "grayscale")}


def _label_names(values: list[str]) -> tuple[list[str], np.ndarray]:
    """Sorted distinct names and each value's index; '' is unlabelled (-1)."""
    names = sorted({v for v in values if v})
    index = {n: i for i, n in enumerate(names)}
    return names, np.array([index.get(v, UNLABELED) for v in values], dtype=np.int64)


def _decode_all(files: RootFiles, rels: list[str], opts: dict[str, Any]) -> tuple[list[Decoded], str]:
    """Every clip decoded, plus the sha256 over all input bytes; every file that cannot be ingested is named in one
    ``UserError`` (up to 5 of them) before anything is written."""
    out: list[Decoded] = []
    bad: list[str] = []
    digest = hashlib.sha256()
    for rel in rels:
        data = files.read(rel)
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        try:
            out.append(decode_video(data, files.where(rel), opts["frames"], opts["stride"], opts["size"],
                                    opts["grayscale"]))
        except UserError as e:
            bad.append(str(e))
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise UserError(f"{len(bad)} of {len(rels)} video files cannot be ingested{more}: " + "; ".join(bad[:5]))
    return out, digest.hexdigest()


def _common_fps(clips: list[Decoded]) -> float:
    counts = Counter(c.fps for c in clips if c.fps > 0)
    if not counts:
        return 0.0
    top = max(counts.values())
    return min(f for f, c in counts.items() if c == top)


@SOURCES.register("video_folder")
@_takes_options
def video_folder(path: Path | None, *, test_fraction: float, split_seed: int, **options: Any) -> VideoSourceResult:
    """Video clips in a folder or tar archive: one sub-folder per class (its name is the label), or flat
    (unlabelled); see the module docstring for the options and what is refused."""
    opts = _folder_options(options)
    assert path is not None
    files = _files(Path(path))
    rels = files.list()
    if not rels:
        raise UserError(f"{path}: no {'/'.join(VIDEO_SUFFIXES)} files found")
    parents = {PurePosixPath(r).parent for r in rels}
    if len({len(p.parts) for p in parents}) > 1:
        raise UserError(f"{path}: video files at different depths ({', '.join(sorted(map(str, parents))[:4])}); "
                        "use class folders of the same depth, or a flat folder")
    labelled = len(parents) > 1  # class folders: a file's label is the folder holding it
    names, y = _label_names([PurePosixPath(r).parent.name if labelled else "" for r in rels])
    clips, digest = _decode_all(files, rels, opts)
    rows = [{"source_fps": c.fps, "source_frames": c.source_frames, "source_height": c.source_height,
             "source_width": c.source_width, "stride": opts["stride"], "size_changes": c.size_changes,
             "decode_error": c.decode_error} for c in clips]
    train, test = stratified_split(y, test_fraction, split_seed)
    splits = {name: VideoSplit([rels[i] for i in idx], np.stack([clips[i].clip for i in idx]), y[idx],
                               np.zeros((len(idx), 0), np.int64), [rows[i] for i in idx])
              for name, idx in (("train", train), ("test", test))}  # clips (N, T, C, H, W)
    fps = _common_fps(clips) / opts["stride"]
    info = {"format": "video_folder", "path": str(path), "container": files.container, "sha256": digest,
            "layout": "class_folders" if labelled else "flat", "options": opts, "num_clips": len(clips)}
    _, c, h, w = clips[0].clip.shape
    return VideoSourceResult(splits, names, {}, "class", opts["frames"], c, h, w, round(fps, 6), False, info)


__all__ = ["DIRECTIONS", "FASHION_MNIST_NAMES", "VIDEO_SUFFIXES", "Decoded", "VideoSourceResult", "VideoSplit",
           "decode_video", "moving_sprites", "render", "sprite_motion", "square_frame", "video_folder"]
