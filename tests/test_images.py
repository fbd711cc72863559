"""Decoding: every odd image kind becomes an upright 8-bit RGB picture."""

import io

import numpy as np
import pytest
from PIL import Image

from byoc_images import open_rgb


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_grayscale_is_replicated_to_three_channels():
    out = open_rgb(encode(Image.new("L", (4, 3), 77), "PNG"))
    assert out.mode == "RGB" and out.size == (4, 3)
    assert np.asarray(out)[0, 0].tolist() == [77, 77, 77]


def test_palette_with_transparency_is_composited_on_white():
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    out = np.asarray(open_rgb(encode(img, "PNG", transparency=0)))
    assert out[0, 0].tolist() == [255, 255, 255]  # transparent red -> white
    assert out[0, 1].tolist() == [0, 0, 255]


def test_rgba_alpha_blends_on_white():
    img = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    out = np.asarray(open_rgb(encode(img, "PNG")))
    assert 120 <= out[0, 0, 0] <= 135


def test_cmyk_jpeg_converts_to_rgb():
    img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    out = np.asarray(open_rgb(encode(img, "JPEG", quality=95)))
    r, g, b = out[4, 4].tolist()
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_is_scaled_not_clipped():
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode.startswith("I;16")
    out = np.asarray(open_rgb(encode(img, "PNG")))[0, :, 0]
    assert out.tolist() == [0, 128, 255]


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = open_rgb(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_float_image_in_unit_range():
    img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    out = np.asarray(open_rgb(encode(img, "TIFF")))[0, :, 0]
    assert out.tolist() == [0, 128, 255]


@pytest.mark.parametrize("payload", [b"", b"not an image", encode(Image.new("RGB", (64, 64)), "JPEG")[:200]])
def test_corrupt_or_truncated_data_raises(payload):
    with pytest.raises(OSError):  # PIL's UnidentifiedImageError is an OSError too
        open_rgb(payload)


def test_an_image_longer_than_50_to_1_is_refused_before_decoding():
    from byoc_images import MAX_ASPECT, ImageTooElongated

    with pytest.raises(ImageTooElongated, match="2x40000 is longer than 50:1"):
        open_rgb(encode(Image.new("L", (2, 40_000)), "PNG"))
    assert open_rgb(encode(Image.new("L", (MAX_ASPECT * 3, 3)), "PNG")).size == (150, 3)  # 50:1 itself decodes


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding_and_a_progressive_one_decodes():
    from hostile_inputs import scan_bomb

    from byoc_images import MAX_JPEG_SCANS, TooManyScans

    bomb = scan_bomb(side=1000, scans=2000)
    with Image.open(io.BytesIO(bomb)) as image:  # a valid JPEG: Pillow would decode it, 2,000 passes over 1 megapixel
        assert image.size == (1000, 1000) and image.info.get("progressive")
    with pytest.raises(TooManyScans, match=f"holds 20(0[0-9]|1[0-9]) scans, more than the {MAX_JPEG_SCANS}"):
        open_rgb(bomb)
    assert open_rgb(scan_bomb(side=64, scans=MAX_JPEG_SCANS - 20)).size == (64, 64)  # many scans, within the limit
    assert open_rgb(encode(Image.new("RGB", (64, 64)), "JPEG", progressive=True)).size == (64, 64)


def test_pixel_limit_is_checked_before_decoding():
    from byoc_images import ImageTooLarge

    bomb = encode(Image.new("L", (4000, 4000)), "PNG")  # compresses to a few KB
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge, match="4000x4000 = 16000000 pixels"):
        open_rgb(bomb, max_pixels=10_000_000)
    assert open_rgb(bomb, max_pixels=20_000_000).size == (4000, 4000)
