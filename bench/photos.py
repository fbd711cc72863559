"""Real Fashion-MNIST photos as JPEG files or bodies, the input every benchmark shares."""

from __future__ import annotations

import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fashion_mnist  # noqa: E402


def jpeg_photos(count: int, size: int, split: str = "t10k") -> list[tuple[bytes, int]]:
    """The first ``count`` photos of ``split`` upscaled to ``size`` px, as (JPEG quality 90 bytes, label)."""
    from PIL import Image

    images, labels = fashion_mnist.load(split)
    out = []
    for image, label in zip(images[:count], labels[:count], strict=False):
        buffer = io.BytesIO()
        Image.fromarray(image).convert("RGB").resize((size, size), Image.BICUBIC).save(
            buffer, format="JPEG", quality=90
        )
        out.append((buffer.getvalue(), int(label)))
    return out


def write_jpeg_folder(root: Path, count: int, size: int) -> Path:
    """``root/<label>/<n>.jpg`` (ImageFolder layout) of ``jpeg_photos(count, size, "train")``."""
    for n, (body, label) in enumerate(jpeg_photos(count, size, "train")):
        folder = root / f"{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{n:06d}.jpg").write_bytes(body)
    return root


def large_photo_files(count: int) -> list[Path]:
    """The first ``count`` photos of the large real-photo set (tests/large_photos.py: 2-15 MP crops and scales of
    Debian's plasma-workspace-wallpapers, made once and cached)."""
    import large_photos

    return large_photos.build(count)


def photos_choice(argv: list[str] | None) -> str:
    """``--photos small`` (the default: Fashion-MNIST photos upscaled) or ``--photos large`` of a benchmark's argv."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--photos", choices=("small", "large"), default="small")
    return parser.parse_known_args(argv or [])[0].photos
