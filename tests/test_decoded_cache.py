"""The decoded-image cache on real Fashion-MNIST photos: same pixels as decoding, built once, shared safely.

In this process builds use no DataLoader workers (forked workers in the pytest process were followed by a segfault
later in the suite); the trainer test builds with worker processes in its own process.
"""

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import REPO, run_trainer
from PIL import Image

from train import decoded_cache
from train.data import ImageDataset, loader_settings
from train.errors import TrainingError
from train.sources import FolderSource, Split
from train.transforms import Preprocess, eval_pixels, eval_transform, train_pixels

PRE = Preprocess(resize=40, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture
def photos(tmp_path, fashion):
    """Real photos as JPEGs of different shapes (landscape, portrait), one class folder each, plus a broken file."""
    root = tmp_path / "photos"
    for label, name in enumerate(("wide", "tall")):
        (root / name).mkdir(parents=True)
        for i, path in enumerate(
            sorted((fashion / "train" / sorted(p.name for p in (fashion / "train").iterdir())[label]).iterdir())[:12]
        ):
            image = Image.open(path).convert("RGB")
            image.resize((90, 50) if name == "wide" else (44, 77)).save(root / name / f"{i:02d}.jpg", quality=90)
    (root / "tall" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def test_cached_eval_pixels_equal_decoding_and_augmentation_runs_on_cached_squares(tmp_path, photos):
    source = FolderSource(photos)
    entry = decoded_cache.open_or_build(source, PRE, tmp_path / "cache", workers=0, strict=False)
    split = Split(source, list(range(len(source))))
    cached = decoded_cache.CachedImageDataset(split, entry, eval_transform(PRE))
    direct = ImageDataset(split, eval_transform(PRE), strict=False, fit=PRE.fit())
    broken = [source.files.index(p) for p in source.files if p.name == "broken.jpg"]
    for position in range(len(source)):
        got, want = cached[position], direct[position]
        assert got[1:] == want[1:]
        if position in broken:
            assert got[0] is None and want[0] is None
        else:
            assert torch.equal(got[0], want[0])  # bit-identical to decoding the file
    augmented = decoded_cache.CachedImageDataset(split, entry, train_pixels(PRE, "strong"))[0][0]
    assert augmented.shape == (3, 32, 32) and augmented.dtype == torch.uint8


def test_built_once_reused_and_rebuilt_when_a_file_changes(tmp_path, photos, caplog):
    caplog.set_level(logging.INFO, logger="train.decoded_cache")
    root = tmp_path / "cache"
    first = decoded_cache.open_or_build(FolderSource(photos), PRE, root, workers=0, strict=False)
    stamp = (first.folder / "images.u8").stat().st_mtime_ns
    again = decoded_cache.open_or_build(FolderSource(photos), PRE, root, workers=0, strict=False)
    assert again.folder == first.folder and (again.folder / "images.u8").stat().st_mtime_ns == stamp
    assert [r.message.split(" (")[0] for r in caplog.records if "reusing" in r.message] == [
        f"decoded-image cache: reusing {first.folder}"
    ]
    Image.new("RGB", (60, 60), "red").save(photos / "wide" / "00.jpg")  # same name, new pixels
    changed = decoded_cache.open_or_build(FolderSource(photos), PRE, root, workers=0, strict=False)
    assert changed.folder != first.folder
    index = FolderSource(photos).files.index(photos / "wide" / "00.jpg")
    assert np.array_equal(changed.images()[index], np.full((40, 40, 3), (254, 0, 0), dtype=np.uint8))
    assert np.array_equal(np.delete(changed.images(), index, 0), np.delete(first.images(), index, 0))


def test_strict_data_fails_on_the_broken_file_and_leaves_no_entry(tmp_path, photos):
    root = tmp_path / "cache"
    with pytest.raises(TrainingError, match=r"broken.jpg.*drop --strict-data"):
        decoded_cache.open_or_build(FolderSource(photos), PRE, root, workers=0, strict=True)
    assert not any(p.is_dir() for p in root.iterdir())


def test_too_little_disk_turns_the_cache_off_with_a_reason(tmp_path, photos, caplog, monkeypatch):
    monkeypatch.setattr(decoded_cache, "DISK_SHARE", 1e-12)
    assert decoded_cache.open_or_build(FolderSource(photos), PRE, tmp_path / "cache", workers=0, strict=False) is None
    assert "decoded-image cache off" in caplog.text and "--decoded-cache DIR elsewhere" in caplog.text


def test_parallel_runs_build_one_entry_and_both_read_it(tmp_path, photos):
    script = textwrap.dedent(f"""
        import logging, sys
        from pathlib import Path
        from train.decoded_cache import open_or_build
        from train.sources import FolderSource
        from train.transforms import Preprocess
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        source, pre = FolderSource(Path({str(photos)!r})), Preprocess(40, 32, (0.5,) * 3, (0.25,) * 3)
        entry = open_or_build(source, pre, Path({str(tmp_path / "cache")!r}), 0, False)
        print(int(entry.images().sum()))
    """)
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    logs = "".join(err for _, err in outputs)
    assert logs.count("decoded once into") == 1 and logs.count("reusing") == 2
    assert len({out for out, _ in outputs}) == 1  # all three read the same pixels
    assert not list((tmp_path / "cache").glob(".*partial*"))


def test_trainer_uses_the_cache_and_a_second_run_reuses_it(tmp_path, fashion):
    args = [
        "--model",
        "resnet18",
        "--pretrained",
        "none",
        "--image-size",
        "32",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--workers",
        "1",
        "--profiler-interval",
        "0",
        "--decoded-cache",
        str(tmp_path / "shared"),
        "--train",
        str(fashion / "train"),
        "--valid",
        str(fashion / "valid"),
    ]
    first = run_trainer(args, tmp_path / "one")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stderr.count("decoded once into") == 2  # train and valid
    second = run_trainer(args, tmp_path / "two")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("decoded-image cache: reusing") == 2 and "decoded once" not in second.stderr
    off = run_trainer([*args[:-6], "--decoded-cache", "off", *args[-4:]], tmp_path / "off")
    assert off.returncode == 0 and "decoded-image cache" not in off.stderr


def test_auto_workers_follow_the_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)))
    assert loader_settings(None) == (7, 2)
    assert loader_settings(None, ranks_on_node=4) == (1, 2)
    assert loader_settings(3) == (3, 2)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0})
    assert loader_settings(None) == (0, None)


def test_bad_workers_flag_is_refused(tmp_path):
    result = run_trainer(["--workers", "many"], tmp_path)
    assert result.returncode == 2 and "expected 'auto' or a number >= 0, got 'many'" in result.stderr


def test_uint8_batches_are_normalised_on_the_device_exactly_like_the_float_preset(photos):
    """Loaders hand over uint8 crops; DeviceInput's normalisation equals the float preset serving uses."""
    from train.engine import DeviceInput

    source = FolderSource(photos)
    images = [source.read(i) for i in range(4)]
    batch = torch.stack([eval_pixels(PRE)(image) for image in images])
    assert batch.dtype == torch.uint8
    on_device = DeviceInput(torch.device("cpu"), True, PRE.mean, PRE.std)(batch)
    assert on_device.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        on_device, torch.stack([eval_transform(PRE)(image) for image in images]), atol=1e-6, rtol=0
    )
    erased = [train_pixels(PRE, "strong")(images[0]) for _ in range(40)]
    assert all(e.dtype == torch.uint8 and e.shape == (3, 32, 32) for e in erased)
