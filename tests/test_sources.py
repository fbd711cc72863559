"""Dataset layouts found in the channels: ImageFolder, HDF5 + CSV, CIFAR batches; splits and their errors."""

from collections import Counter
from pathlib import Path

import fashion_mnist
import pytest
from hostile_inputs import scan_bomb
from PIL import Image

from train.data import ImageDataset, collate_skipping
from train.errors import TrainingError
from train.sources import load_splits, stratified_split
from train.transforms import Preprocess, eval_transform

PRE = Preprocess(resize=32, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3)


def splits_of(train: Path, valid: Path | None = None, test: Path | None = None, **kw):
    missing = train.parent / "absent"
    return load_splits(
        train, valid or missing, test or missing, kw.get("valid_fraction", 0.2), kw.get("test_fraction", 0.2), 0
    )


def test_imagefolder_with_all_channels(fashion):
    splits = splits_of(fashion / "train", fashion / "valid", fashion / "test")
    assert splits.layout == "imagefolder"
    assert splits.classes == sorted(fashion_mnist.CLASSES)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (400, 100, 100)
    image = splits.train.source.read(0)
    assert image.mode == "RGB" and image.size == (28, 28)


def test_missing_valid_is_split_stratified(fashion):
    splits = splits_of(fashion / "train")
    assert len(splits.valid) == 80 and len(splits.train) == 320 and splits.test is None
    assert set(Counter(splits.valid.labels).values()) == {8}
    assert not set(splits.valid.indices) & set(splits.train.indices)


def test_channel_holding_split_folders(tmp_path, fashion):
    import shutil

    for split in ("train", "valid"):
        shutil.copytree(fashion / split, tmp_path / "data" / split)
    splits = splits_of(tmp_path / "data")
    assert (len(splits.train), len(splits.valid)) == (400, 100)


def test_class_folder_mismatch_is_explained(tmp_path, fashion):
    import shutil

    shutil.copytree(fashion / "valid", tmp_path / "valid")
    (tmp_path / "valid" / "Bag").rename(tmp_path / "valid" / "Handbag")
    with pytest.raises(TrainingError, match=r"only in valid: \['Handbag'\]; only in train: \['Bag'\]"):
        splits_of(fashion / "train", tmp_path / "valid")


@pytest.mark.parametrize("make", [lambda p: None, lambda p: p.mkdir(), lambda p: (p / "cat").mkdir(parents=True)])
def test_missing_or_empty_train_channel(tmp_path, make):
    make(tmp_path / "train")
    with pytest.raises(TrainingError, match=r"'train' channel .* is missing or empty"):
        splits_of(tmp_path / "train")


def test_hdf5_csv_layout_gets_stratified_valid_and_test(tmp_path):
    fashion_mnist.write_hdf5(tmp_path / "isic", {0: 190, 9: 10})  # 5% positives, like a (milder) ISIC
    splits = splits_of(tmp_path / "isic", valid_fraction=0.2, test_fraction=0.2)
    assert splits.layout == "hdf5+csv" and splits.classes == ["0", "1"]
    assert Counter(splits.valid.labels) == {0: 38, 1: 2} and Counter(splits.test.labels) == {0: 38, 1: 2}
    assert Counter(splits.train.labels) == {0: 114, 1: 6}
    dataset = ImageDataset(splits.train, eval_transform(PRE), strict=True, fit=PRE.fit())
    x, _y, _ = dataset[0]
    assert x.shape == (3, 32, 32)


def test_hdf5_needs_its_csv(tmp_path):
    fashion_mnist.write_hdf5(tmp_path / "isic", {0: 5, 1: 5})
    (tmp_path / "isic" / "train-metadata.csv").unlink()
    with pytest.raises(TrainingError, match="needs a CSV of labels"):
        splits_of(tmp_path / "isic")


@pytest.mark.parametrize("fine", [False, True])
def test_cifar_batches(tmp_path, fine):
    fashion_mnist.write_cifar(tmp_path / "cifar", per_class=12, classes=5, fine=fine)
    splits = splits_of(tmp_path / "cifar", valid_fraction=0.25)
    assert splits.layout == "cifar" and splits.classes == fashion_mnist.CLASSES[:5]
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (45, 15, 60)
    assert splits.train.source.read(0).size == (32, 32)


def test_unreadable_images_are_skipped_or_fatal(tmp_path, fashion):
    import shutil

    shutil.copytree(fashion / "valid", tmp_path / "train")
    (tmp_path / "train" / "Bag" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    Image.new("RGB", (10, 10)).save(tmp_path / "train" / "Bag" / "cmyk.jpg")
    Image.new("L", (2, 40_000)).save(
        tmp_path / "train" / "Coat" / "strip.png"
    )  # resized to a 32 px shorter side: 61 MB
    (tmp_path / "train" / "Coat" / "scans.jpg").write_bytes(scan_bomb())
    splits = splits_of(tmp_path / "train", fashion / "valid")
    dataset = ImageDataset(splits.train, eval_transform(PRE), strict=False, fit=PRE.fit())
    images, labels, skipped = collate_skipping([dataset[i] for i in range(len(dataset))])
    assert len(skipped) == 3 and len(labels) == 101 and images.shape == (101, 3, 32, 32)
    strict = ImageDataset(splits.train, eval_transform(PRE), strict=True, fit=PRE.fit())
    with pytest.raises(TrainingError, match=r"broken.jpg"):
        [strict[i] for i in range(len(strict))]


def test_stratified_split_keeps_every_class_in_every_part():
    labels = [0] * 100 + [1] * 3
    valid, test, train = stratified_split(labels, (0.1, 0.1), seed=1)
    for part in (valid, test, train):
        assert 1 in {labels[i] for i in part}
    assert sorted(valid + test + train) == list(range(103))
