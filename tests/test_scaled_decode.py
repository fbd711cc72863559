"""Scaled decoding (byoc_images.fit) on real large photos: the DCT scale chosen, EXIF orientation, CMYK, grey,
progressive and PNG files, the header limits before any decoding, and serving's pictures equal to training's."""

from __future__ import annotations

import io

import large_photos
import numpy as np
import pytest
from PIL import Image

from byoc_images import Fit, ImageTooElongated, ImageTooLarge, open_rgb, resized_size
from byoc_images.fit import HEADROOM, MAX_JPEG_SCALE, draft_jpeg, reduction

FIT = Fit(256, "bilinear", "scaled")
EXACT = Fit(256, "bilinear", "exact")


@pytest.fixture(scope="module")
def photos() -> list:
    """The first 12 photos of the large set (2-15 MP JPEGs and PNGs, some progressive, some sideways with EXIF)."""
    try:
        large_photos.ensure_installed()
    except SystemExit as exc:
        pytest.skip(str(exc))
    return [
        (large_photos.recipe(i, large_photos.sources()), path.read_bytes())
        for i, path in enumerate(large_photos.build(12))
    ]


def encoded(picture: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_the_set_is_real_large_photos_of_every_kind(photos):
    sizes = [r.size[0] * r.size[1] for r, _ in photos]
    assert all(large_photos.MIN_PIXELS <= pixels <= large_photos.MAX_PIXELS * 1.01 for pixels in sizes), sizes
    kinds = {(r.fmt, r.progressive, r.orientation != 1) for r, _ in photos}
    assert ("jpeg", False, False) in kinds and len(kinds) >= 2, kinds
    assert len({data for _, data in photos}) == len(photos)
    recipes = [
        large_photos.recipe(i, large_photos.sources()) for i in range(1000)
    ]  # the benchmarks' set: every kind, 2-15 MP
    assert (
        {r.fmt for r in recipes} == {"jpeg", "png"}
        and any(r.progressive for r in recipes)
        and {r.orientation for r in recipes} == {1, 3, 6, 8}
    )
    assert len({r.name for r in recipes}) == 1000


def test_a_large_jpeg_is_decoded_at_the_smallest_scale_that_keeps_the_headroom(photos):
    """1/2 or 1/4 (never 1/8, only each block's average), the most that leaves HEADROOM x the resized size."""
    for r, data in (p for p in photos if p[0].fmt == "jpeg"):
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            target = resized_size(img.size, FIT.shorter)
            scale = draft_jpeg(img, FIT)
            assert img.size == (-(-width // scale), -(-height // scale))  # what libjpeg will decode
        assert scale in (1, 2, 4), (r.name, scale)
        assert width // scale >= HEADROOM * target[0] and height // scale >= HEADROOM * target[1]
        if scale < MAX_JPEG_SCALE:  # the next DCT scale would leave less than the headroom on a side
            assert width // (2 * scale) < HEADROOM * target[0] or height // (2 * scale) < HEADROOM * target[1], r.name
    assert any(draft_jpeg(Image.open(io.BytesIO(data)), FIT) > 1 for r, data in photos if r.fmt == "jpeg")


def test_scaled_pictures_are_the_resized_size_upright_and_close_to_every_pixel_decoded(photos):
    for r, data in photos:
        scaled, exact = (
            np.asarray(open_rgb(data, fit=FIT), dtype=np.float32),
            np.asarray(open_rgb(data, fit=EXACT), dtype=np.float32),
        )
        upright = (r.size[0], r.size[1])
        assert scaled.shape == exact.shape == (*resized_size(upright, 256)[::-1], 3), (
            r.name
        )  # EXIF honoured: the photo's own shape
        assert np.abs(scaled - exact).mean() < 1.5, r.name  # of 255: the same picture


def test_exif_orientation_is_honoured_when_decoding_small():
    photo = Image.open(large_photos.sources()[0]).convert("RGB")
    upright = photo.resize((2000, 1500))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer turns it 90 degrees clockwise
    sideways = encoded(upright.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes(), quality=95)
    got = np.asarray(open_rgb(sideways, fit=Fit(128)), dtype=np.float32)
    want = np.asarray(open_rgb(encoded(upright, quality=95), fit=Fit(128)), dtype=np.float32)
    assert got.shape == want.shape == (128, 170, 3)
    assert np.abs(got - want).mean() < 2


@pytest.mark.parametrize(
    "mode,options", [("CMYK", {}), ("L", {}), ("RGB", {"progressive": True}), ("RGB", {"subsampling": "4:4:4"})]
)
def test_cmyk_grey_and_progressive_jpegs_decode_small(mode, options):
    photo = Image.open(large_photos.sources()[0]).convert("RGB").resize((3000, 2000))
    data = encoded(photo.convert(mode), quality=90, **options)
    scaled, exact = open_rgb(data, fit=Fit(224)), open_rgb(data, fit=Fit(224, decode="exact"))
    assert scaled.mode == "RGB" and scaled.size == exact.size == (336, 224)
    assert np.abs(np.asarray(scaled, dtype=np.float32) - np.asarray(exact, dtype=np.float32)).mean() < 2


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF", "BMP"])
def test_other_formats_are_reduced_by_a_whole_factor_first(fmt):
    photo = Image.open(large_photos.sources()[0]).convert("RGB").resize((2400, 1600))
    data = encoded(photo, fmt)
    assert reduction(photo.size, Fit(200)) == 2  # 2400 // (3 x 300)
    scaled, exact = open_rgb(data, fit=Fit(200)), open_rgb(data, fit=Fit(200, decode="exact"))
    assert scaled.size == exact.size == (300, 200)
    assert np.abs(np.asarray(scaled, dtype=np.float32) - np.asarray(exact, dtype=np.float32)).mean() < 1.5


def test_small_pictures_and_unresized_fits_keep_their_pixels():
    small = encoded(Image.new("RGB", (300, 200), (10, 200, 30)))
    assert open_rgb(small, fit=Fit(256, resize=False)).size == (300, 200)  # under twice the size: nothing dropped
    big = encoded(Image.new("RGB", (4000, 3000), (10, 200, 30)))
    kept = open_rgb(big, fit=Fit(256, resize=False))  # for random crops: decoded small, HEADROOM x the resize left
    assert kept.size == (2000, 1500)
    huge = encoded(Image.new("RGB", (8000, 6000), (10, 200, 30)))
    assert open_rgb(huge, fit=Fit(256, resize=False)).size == (2000, 1500)  # 1/4 at most: 1/8 keeps only block averages


def test_the_header_limits_come_before_any_decoding_with_a_fit():
    bomb = encoded(Image.new("L", (8000, 8000)), quality=10)
    with pytest.raises(ImageTooLarge):
        open_rgb(bomb, max_pixels=40_000_000, fit=FIT)  # 64 MP announced: refused before the small decode too
    with pytest.raises(ImageTooElongated):
        open_rgb(encoded(Image.new("L", (20_000, 100)), quality=10), fit=FIT)


def test_serving_pictures_equal_the_training_eval_transform_on_large_photos(photos, tmp_path):
    """The same file through serving's Decoder and through training's ImageDataset + eval preset: the same pixels
    (uint8, exactly), and the same network input."""
    from serve.artifact import ModelSpec
    from serve.decode import Decoder, open_picture
    from serve.limits import Deadline
    from serve.preprocess import center_crop
    from train.data import ImageDataset
    from train.sources import FolderSource, Split
    from train.transforms import Preprocess, eval_pixels, eval_transform

    (tmp_path / "photos" / "all").mkdir(parents=True)
    for n, (r, data) in enumerate(photos):
        (tmp_path / "photos" / "all" / f"{n:02d}-{r.name}").write_bytes(data)
    source = FolderSource(tmp_path / "photos")
    split = Split(source, list(range(len(source))))
    for decode in ("scaled", "exact"):
        pre = Preprocess(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", decode)
        spec = ModelSpec(
            None, ["all"], 256, 224, pre.mean, pre.std, "bicubic", None, "input", "logits", "x", decode=decode
        )
        decoder = Decoder(spec, 40_000_000, 64, decoding=decode)
        pixels = ImageDataset(split, eval_pixels(pre), strict=True, fit=pre.fit())
        inputs = ImageDataset(split, eval_transform(pre), strict=True, fit=pre.fit())
        for position, path in enumerate(source.files):
            data = path.read_bytes()
            served_pixels = np.asarray(center_crop(open_picture(data, 40_000_000, decoder.fit), 224)).transpose(2, 0, 1)
            assert np.array_equal(served_pixels, pixels[position][0].numpy()), (decode, path.name)
            served, _ = decoder.decode(data, "image/jpeg", Deadline(60), lambda count: None)
            assert np.abs(served[0] - inputs[position][0].numpy()).max() < 1e-5, (decode, path.name)
