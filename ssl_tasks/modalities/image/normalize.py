"""The one image normalisation every source that decodes image files uses (``image_folder`` here, and the
image–caption sources of :mod:`ssl_tasks.modalities.image_text.sources`).

Encoded bytes -> uint8 (C, H, W), decided by the bytes, never by the file name (PIL reads the format from the
content):

1. decode with PIL (any mode: 1-bit, grayscale, 16-bit grayscale, palette, RGB, RGBA, CMYK, ...); wide integer
   greyscale (16-bit PNGs, PIL's ``I;16*`` and ``I``) is scaled to 8 bits by ``x * 255 / 65535``, rounded (values
   outside 0..65535 clipped), its transparent grey value kept as alpha; PIL's own conversion clips instead, so
   every value over 255 became white;
2. transparency (an alpha channel, or a palette/grayscale image with a ``transparency`` entry) is composited
   onto the ``background`` colour, so a transparent pixel gets that colour rather than whatever RGB it happens to
   hold; an opaque image is only converted, its pixels unchanged;
3. converted to ``L`` (C=1) or ``RGB`` (C=3);
4. with ``size``: padded to a square with ``background``, centred (the aspect ratio is kept, nothing is cropped),
   then resized to ``size`` x ``size`` with bicubic resampling (Pillow's ``reducing_gap=3``: a box
   pre-reduction by an integer factor while the image stays >= 3x the target, which halves ingest time and is
   within a few grey levels of the full bicubic). Without ``size`` the image keeps its own size.

Every step is deterministic, so two ingests of the same files are byte-identical.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np

from ssl_tasks.core.errors import UserError

WIDE_GREY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0)}
IMAGE_SIZE_RANGE = (8, 1024)
REDUCING_GAP = 3.0
#: What PIL raises on bytes it cannot decode (a corrupt or truncated file, or not an image at all).
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError, struct.error,
                                                  IndexError, TypeError, ZeroDivisionError, zlib.error)


def check_image_size(source: str, value: Any, *, optional: bool = False) -> int | None:
    """The ``image_size`` option: an integer in 8..1024 (or None when ``optional``)."""
    if value is None and optional:
        return None
    lo, hi = IMAGE_SIZE_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise UserError(f"source {source!r}: option image_size must be an integer in {lo}..{hi}; got {value!r}")
    return int(value)


def check_background(source: str, value: Any) -> tuple[int, int, int]:
    """The ``background`` option: a colour name of :data:`BACKGROUNDS` -> its RGB."""
    if not isinstance(value, str) or value not in BACKGROUNDS:
        raise UserError(f"source {source!r}: option background must be one of {', '.join(BACKGROUNDS)}; got {value!r}")
    return BACKGROUNDS[value]


def has_transparency(im: Any) -> bool:
    """Whether a PIL image carries transparency (an alpha band or a transparent palette/grey entry)."""
    return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info


def _wide_grey_to_8bit(im: Any) -> Any:
    """A 16-bit (or 32-bit integer) greyscale PIL image as ``L`` (``LA`` with its transparent value as alpha)."""
    from PIL import Image

    x = np.asarray(im).astype(np.int64).clip(0, 65535)
    grey = Image.fromarray(((x * 255 + 32767) // 65535).astype(np.uint8), "L")  # round(x * 255 / 65535): no ties
    t = im.info.get("transparency")
    if isinstance(t, int):
        grey = Image.merge("LA", (grey, Image.fromarray(np.where(x == t, 0, 255).astype(np.uint8), "L")))
    return grey


def normalize_image(data: bytes, *, mode: str = "RGB", size: int | None = None,
                    background: tuple[int, int, int] = BACKGROUNDS["white"]) -> np.ndarray:
    """Encoded image bytes -> uint8 (C, H, W) (``mode`` ``L``: C=1, ``RGB``: C=3); the module docstring has the
    steps. Raises what PIL raises for bytes it cannot decode (:data:`DECODE_ERRORS`, ``DecompressionBombError``).
    """
    from PIL import Image

    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in WIDE_GREY_MODES:
            im = _wide_grey_to_8bit(im)
        if has_transparency(im):
            rgba = im.convert("RGBA")
            flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba).convert(mode)
        else:
            flat = im.convert(mode)
    fill: Any = background if mode == "RGB" else Image.new("RGB", (1, 1), background).convert("L").getpixel((0, 0))
    if size is not None:
        w, h = flat.size
        if w != h:
            side = max(w, h)
            square = Image.new(mode, (side, side), fill)
            square.paste(flat, ((side - w) // 2, (side - h) // 2))
            flat = square
        if flat.size != (size, size):
            flat = flat.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP)
    arr = np.asarray(flat, dtype=np.uint8)
    return arr[None] if mode == "L" else arr.transpose(2, 0, 1)


__all__ = ["WIDE_GREY_MODES", "BACKGROUNDS", "DECODE_ERRORS", "IMAGE_SIZE_RANGE", "check_background", "check_image_size",
           "has_transparency", "normalize_image"]
