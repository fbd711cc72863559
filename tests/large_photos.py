"""Real large photos for tests and benchmarks: crops and scales of the photographs in Debian's
plasma-workspace-wallpapers, re-encoded as phones and apps do.

Photo ``i`` of the set depends on ``i`` alone (its own seed), so the first five the tests use are the first five of
the 1,000 the benchmarks use. Each is 2 to 15 MP; most are baseline JPEGs of quality 80-95, some progressive, some
stored sideways with an EXIF orientation (so they are upright only when it is honoured), some PNG.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ROOT = Path(os.environ.get("WALLPAPERS_DIR", "/usr/share/wallpapers"))
PACKAGE = "plasma-workspace-wallpapers"
VERSION = 1  # bump when the derivation changes: the cached set is named after it
MIN_PIXELS, MAX_PIXELS = 2_000_000, 15_000_000
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3, 9 / 16)  # camera, DSLR, video, square, and their portraits
ORIENTATIONS = {
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
    3: Image.Transpose.ROTATE_180,
}  # EXIF tag -> how the pixels are stored


@dataclass(frozen=True)
class Recipe:
    """How photo ``index`` is made from a wallpaper: the crop (fractions of the source), the output size, the format."""

    index: int
    source: Path
    box: tuple[float, float, float, float]
    size: tuple[int, int]
    fmt: str  # "jpeg" or "png"
    quality: int
    progressive: bool
    orientation: int  # 1: upright; 3, 6, 8: stored rotated, with that EXIF orientation

    @property
    def name(self) -> str:
        kind = "png" if self.fmt == "png" else "jpg"
        return f"{self.index:05d}-{self.source.parts[-4]}-{self.size[0]}x{self.size[1]}.{kind}"


def ensure_installed() -> None:
    """Install the wallpapers with apt where they are missing and this is root; otherwise say what to run."""
    if sources(check=False):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", PACKAGE],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    if not sources(check=False):
        raise SystemExit(f"no photographs under {ROOT}: run `sudo apt-get install {PACKAGE}` (or set WALLPAPERS_DIR)")


def sources(check: bool = True) -> list[Path]:
    """The package's photographs: every JPEG under images/ and images_dark/ (the PNGs are renders), largest copy
    each."""
    found = sorted(p for p in ROOT.glob("*/contents/images*/*.jpg") if p.is_file() and not p.is_symlink())
    if check and not found:
        raise SystemExit(f"no photographs under {ROOT}: run `sudo apt-get install {PACKAGE}` (or set WALLPAPERS_DIR)")
    return found


def recipe(index: int, photos: list[Path]) -> Recipe:
    """Photo ``index`` of the set: its own random crop, scale and encoding, seeded by the index alone."""
    rng = random.Random(f"large-photos-{VERSION}-{index}")
    source = photos[index % len(photos)]
    with Image.open(source) as img:
        width, height = img.size
    aspect = rng.choice(ASPECTS)
    share = rng.uniform(0.55, 1.0)  # of the largest crop of that aspect
    crop_w = min(width, height * aspect) * share
    crop_h = crop_w / aspect
    left, top = rng.uniform(0, width - crop_w), rng.uniform(0, height - crop_h)
    pixels = rng.uniform(MIN_PIXELS, MAX_PIXELS)
    scale = min((pixels / (crop_w * crop_h)) ** 0.5, 1.6)  # at most 1.6x up: the detail stays the photograph's
    size = (round(crop_w * scale), round(crop_h * scale))
    if size[0] * size[1] < MIN_PIXELS:  # a small wallpaper: scale up to the minimum
        up = (MIN_PIXELS / (size[0] * size[1])) ** 0.5 * 1.01
        size = (round(size[0] * up), round(size[1] * up))
    roll = rng.random()
    fmt = "png" if roll < 0.1 else "jpeg"
    box = (left / width, top / height, (left + crop_w) / width, (top + crop_h) / height)
    orientation = rng.choice((3, 6, 8)) if 0.1 <= roll < 0.25 else 1
    return Recipe(index, source, box, size, fmt, rng.randint(80, 95), fmt == "jpeg" and 0.25 <= roll < 0.4, orientation)


def render(r: Recipe, picture: Image.Image) -> bytes:
    """The encoded file of ``r`` from its decoded source ``picture``."""
    width, height = picture.size
    box = (round(r.box[0] * width), round(r.box[1] * height), round(r.box[2] * width), round(r.box[3] * height))
    out = picture.resize(r.size, Image.Resampling.LANCZOS, box=box)
    buffer = io.BytesIO()
    if r.fmt == "png":
        out.save(buffer, format="PNG", compress_level=3)
        return buffer.getvalue()
    exif = Image.Exif()
    if r.orientation != 1:
        out = out.transpose(ORIENTATIONS[r.orientation])  # stored sideways; the tag turns it upright again
        exif[0x0112] = r.orientation
    out.save(
        buffer, format="JPEG", quality=r.quality, progressive=r.progressive, exif=exif.tobytes(), subsampling="4:2:0"
    )
    return buffer.getvalue()


def cache_dir() -> Path:
    return Path(os.environ.get("LARGE_PHOTOS_DIR", Path.home() / ".cache" / "byoc-vision" / f"large-photos-v{VERSION}"))


def build(count: int, folder: Path | None = None) -> list[Path]:
    """The first ``count`` photos of the set as files (made once, then read from ``folder``), in index order."""
    ensure_installed()
    folder = folder or cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    photos = sources()
    recipes = [recipe(i, photos) for i in range(count)]
    missing = [r for r in recipes if not (folder / r.name).is_file()]
    for source in sorted({r.source for r in missing}):  # each wallpaper decoded once
        with Image.open(source) as img:
            picture = img.convert("RGB")
        for r in (r for r in missing if r.source == source):
            partial = folder / f".{r.name}.partial"
            partial.write_bytes(render(r, picture))
            partial.replace(folder / r.name)
    return [folder / r.name for r in recipes]
