"""The one image normalisation (modalities/image/normalize.py) and image_folder's image_size / background options:
exact pixels on tiny synthetic images, the error for mixed sizes, class names in validation, byte-identical
re-ingest."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_tasks.core.errors import UserError
from ssl_tasks.data.ingest import ingest
from ssl_tasks.modalities.image.normalize import normalize_image
from ssl_tasks.modalities.image.shards import ImageDataset
from ssl_tasks.validation import ValidationConfig, ValidationFailed, validate_dataset

RED, WHITE, BLACK = (255, 0, 0), (255, 255, 255), (0, 0, 0)


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def save(path: Path, im: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(im))
    return path


def rgba_with_hole() -> Image.Image:
    """2x2 RGBA: opaque red except a fully transparent pixel at (x=1, y=0) that holds green."""
    im = Image.new("RGBA", (2, 2), (*RED, 255))
    im.putpixel((1, 0), (0, 255, 0, 0))
    return im


def test_transparent_pixel_becomes_the_background_colour() -> None:
    data = png(rgba_with_hole())
    white = normalize_image(data, background=WHITE)
    black = normalize_image(data, background=BLACK)
    assert white.shape == (3, 2, 2) and white.dtype == np.uint8
    assert tuple(white[:, 0, 1]) == WHITE and tuple(black[:, 0, 1]) == BLACK  # not the green it held
    assert tuple(white[:, 1, 0]) == RED and tuple(black[:, 1, 1]) == RED  # opaque pixels untouched


def test_half_transparent_pixel_is_blended() -> None:
    im = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    assert tuple(normalize_image(png(im), background=WHITE)[:, 0, 0]) == (127, 127, 127)


def test_pad_keeps_the_aspect_and_centres() -> None:
    wide = Image.new("RGB", (4, 2), RED)  # 4 wide, 2 high -> rows 0 and 3 padding
    out = normalize_image(png(wide), size=4, background=WHITE)
    assert out.shape == (3, 4, 4)
    assert (out[:, [0, 3]] == 255).all()
    assert (out[0, 1:3] == 255).all() and (out[1:, 1:3] == 0).all()
    tall = Image.new("L", (1, 3), 7)  # 1 wide, 3 high -> columns 0 and 2 padding, in the grey of black
    g = normalize_image(png(tall), mode="L", size=3, background=BLACK)
    assert g.shape == (1, 3, 3) and (g[0, :, 1] == 7).all() and (g[0, :, [0, 2]] == 0).all()


def test_resize_of_a_flat_image_is_exact() -> None:
    out = normalize_image(png(Image.new("RGB", (3, 3), (10, 20, 30))), size=12)
    assert out.shape == (3, 12, 12) and tuple(np.unique(out.reshape(3, -1), axis=1).ravel()) == (10, 20, 30)


@pytest.mark.parametrize("make", [
    lambda: Image.new("1", (2, 2), 1),
    lambda: Image.new("L", (2, 2), 200),
    lambda: Image.new("LA", (2, 2), (200, 0)),          # fully transparent grey -> the background
    lambda: Image.new("I;16", (2, 2), 3),
    lambda: Image.new("P", (2, 2), 0),
    lambda: Image.new("CMYK", (2, 2), (0, 0, 0, 0)),
])
def test_every_mode_decodes_to_rgb_and_grey(make) -> None:  # noqa: ANN001
    data = png(make()) if make().mode != "CMYK" else _jpeg(make())
    assert normalize_image(data).shape == (3, 2, 2)
    assert normalize_image(data, mode="L").shape == (1, 2, 2)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    """16-bit samples (PNG's 0..65535) map onto 0..255 by x * 255 / 65535, rounded; clipping made every value over
    255 white (issue 25, item 4)."""
    values = np.array([[0, 1000, 30000], [60000, 65535, 128]], dtype=np.uint16)
    expected = np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    tiff = io.BytesIO()
    Image.fromarray(values.astype(np.int32)).save(tiff, format="TIFF")  # 32-bit integer grey (PIL's I)
    for data in (png(Image.fromarray(values)), tiff.getvalue()):  # a 16-bit PNG opens as I;16
        assert np.array_equal(normalize_image(data, mode="L")[0], expected)
        assert np.array_equal(normalize_image(data, mode="RGB"), np.stack([expected] * 3))


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG")
    return buf.getvalue()


def test_palette_transparency_is_composited() -> None:
    im = Image.new("P", (2, 1), 0)
    im.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 0  # palette entry 0 (blue) is transparent
    out = normalize_image(png(im), background=WHITE)
    assert tuple(out[:, 0, 0]) == WHITE and tuple(out[:, 0, 1]) == RED


def test_image_text_sources_use_the_same_function() -> None:
    from ssl_tasks.modalities.image_text import sources

    data = png(rgba_with_hole().resize((3, 2)))
    assert sources.normalize_image is normalize_image
    np.testing.assert_array_equal(sources.render(data, 8, WHITE), normalize_image(data, size=8, background=WHITE))


# --------------------------------------------------------------------------- image_folder


def mixed_folder(root: Path) -> Path:
    """Two classes of differently sized images, one with transparency, one a PNG named .jpg."""
    save(root / "cats" / "a.png", Image.new("RGB", (4, 2), RED))
    save(root / "cats" / "b.png", rgba_with_hole())
    save(root / "cats" / "c.jpg", Image.new("RGB", (2, 4), RED))  # PNG bytes: decoded by content
    for i in range(3):
        save(root / "dogs" / f"{i}.png", Image.new("RGB", (5, 5), (0, 0, 10 * i)))
    return root


def test_mixed_sizes_without_image_size_name_the_option(tmp_path: Path) -> None:
    src = mixed_folder(tmp_path / "in")
    with pytest.raises(UserError, match=r"images differ in size: .*cats/a\.png is 4x2 but .*cats/b\.png is 2x2; "
                                        r"give the option image_size \(--option image_size=32"):
        ingest("image_folder", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_and_bad_options_are_named(tmp_path: Path) -> None:
    src = mixed_folder(tmp_path / "in")
    with pytest.raises(UserError, match="unknown option 'size'; valid: background, image_size"):
        ingest("image_folder", src, tmp_path / "out", options={"size": 4})
    with pytest.raises(UserError, match="option background must be one of white, black; got 'pink'"):
        ingest("image_folder", src, tmp_path / "out", options={"image_size": 8, "background": "pink"})
    with pytest.raises(UserError, match=r"option image_size must be an integer in 8\.\.1024; got 4\.5"):
        ingest("image_folder", src, tmp_path / "out", options={"image_size": 4.5})


def test_image_folder_pads_resizes_and_composites(tmp_path: Path) -> None:
    src = mixed_folder(tmp_path / "in")
    m = ingest("image_folder", src, tmp_path / "out", test_fraction=0.34,
               options={"image_size": 8, "background": "black"})
    assert m["image_shape"] == [3, 8, 8] and m["label_names"] == ["cats", "dogs"]
    assert m["source"]["options"] == {"image_size": 8, "background": "black"}
    ds = ImageDataset(tmp_path / "out")
    images = {split: np.concatenate([np.asarray(x) for x, _ in ds.shards(split)]) for split in ds.splits()}
    every = np.concatenate(list(images.values()))
    expected = {f: normalize_image((src / f).read_bytes(), size=8, background=BLACK)
                for f in ("cats/a.png", "cats/b.png", "cats/c.jpg")}
    for f, want in expected.items():
        assert any((img == want).all() for img in every), f
    wide = expected["cats/a.png"]
    # 4x2 red padded to 4x4 on black, then 8x8: the outer rows stay black, the middle red (bicubic blends between)
    assert (wide[:, [0, 7]] == 0).all() and (wide[0, 3:5] == 255).all() and (wide[1:, 3:5] == 0).all()


def test_grey_and_transparent_grey_give_one_channel(tmp_path: Path) -> None:
    save(tmp_path / "in" / "x" / "a.png", Image.new("L", (2, 2), 9))
    save(tmp_path / "in" / "x" / "b.png", Image.new("LA", (2, 2), (9, 0)))
    save(tmp_path / "in" / "y" / "c.png", Image.new("L", (2, 2), 9))
    save(tmp_path / "in" / "y" / "d.png", Image.new("L", (2, 2), 9))
    m = ingest("image_folder", tmp_path / "in", tmp_path / "out", test_fraction=0.5)
    assert m["image_shape"] == [1, 2, 2]
    ds = ImageDataset(tmp_path / "out")
    values = sorted({int(v) for s in ds.splits() for x, _ in ds.shards(s) for v in np.unique(x)})
    assert values == [9, 255]  # b.png is transparent: white, the default background


def test_reingest_is_byte_identical(tmp_path: Path) -> None:
    src = mixed_folder(tmp_path / "in")
    for out in ("one", "two"):
        ingest("image_folder", src, tmp_path / out, test_fraction=0.34, options={"image_size": 8})
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


def test_validation_names_classes_by_folder_name(tmp_path: Path) -> None:
    for i in range(12):
        save(tmp_path / "in" / "cats" / f"{i}.png", Image.new("RGB", (2, 2), (i, 0, 0)))
    for i in range(2):
        save(tmp_path / "in" / "dogs" / f"{i}.png", Image.new("RGB", (2, 2), (0, i, 50)))
    ds = tmp_path / "ds"
    ingest("image_folder", tmp_path / "in", ds, test_fraction=0.5)
    report = validate_dataset(ds, tmp_path / "r.json")  # thresholds unset: a warning, by name
    assert report["success"] and report["n_warnings"] == 1
    assert "class=dogs (1 of 7, 14.3%)" in report["warnings"][0]
    with pytest.raises(ValidationFailed) as ei:
        validate_dataset(ds, tmp_path / "r2.json", config=ValidationConfig(max_class_fraction=1.5))
    msg = str(ei.value)
    assert "class=cats (6 of 7, 85.7%)" in msg and "class=dogs" in msg and "class=0" not in msg
