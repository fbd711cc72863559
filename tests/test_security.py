"""The training and launch side's security fixes: hostile CIFAR pickles, a checkpoint write that fails half-way,
the IAM policy's name prefix, and the build context."""

import json
import pickle
import re
import subprocess
import sys
from fnmatch import fnmatch

import fashion_mnist
import numpy as np
import pytest
from conftest import REPO, docker_available

from train.errors import TrainingError
from train.sources import CifarSource, load_splits


class RunsCode:
    """What an attacker puts into batches.meta: unpickling it would call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def cifar_with_meta(root, meta) -> None:
    fashion_mnist.write_cifar(root, per_class=2, classes=3)
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "numpy object array"])
def test_crafted_cifar_pickle_runs_nothing_and_fails_clearly(tmp_path, payload):
    marker = tmp_path / "pwned"
    if payload == "os.system":
        meta = {b"label_names": [b"a", b"b", b"c"], b"x": RunsCode(marker)}
    elif payload == "builtins.eval":
        meta = {b"label_names": eval}  # any callable from builtins is refused by name
    else:
        meta = {b"label_names": np.array([RunsCode(marker)], dtype=object)}
    cifar_with_meta(tmp_path / "cifar", meta)
    with pytest.raises(TrainingError) as refused:
        load_splits(tmp_path / "cifar", tmp_path / "absent", tmp_path / "absent", 0.2, 0.2, 0)
    assert "is not a CIFAR python batch" in str(refused.value) and "nothing in it ran" in str(refused.value)
    assert re.search(r"refers to (posix|os|builtins|__builtin__)\.(system|eval)", str(refused.value)), str(
        refused.value
    )
    assert not marker.exists()


def test_cifar_batches_with_numpy_arrays_still_load(tmp_path):
    root = fashion_mnist.write_cifar(tmp_path / "cifar", per_class=3, classes=4)
    source = CifarSource(root, "train")
    assert source.images.shape == (12, 32, 32, 3) and source.classes == fashion_mnist.CLASSES[:4]


def test_cifar_batch_that_is_not_a_dict_or_lacks_data(tmp_path):
    root = fashion_mnist.write_cifar(tmp_path / "cifar", per_class=2, classes=3)
    (root / "data_batch_1").write_bytes(pickle.dumps({b"labels": [0, 1]}))
    with pytest.raises(TrainingError, match="lacks 'data' or 'labels'"):
        CifarSource(root, "train")
    (root / "batches.meta").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(TrainingError, match="holds a list, not a dict"):
        CifarSource(root, "train")
    (root / "batches.meta").write_bytes(b"\x80\x02garbage")
    with pytest.raises(TrainingError, match="is not a CIFAR python batch"):
        CifarSource(root, "train")


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
import torch
from train import checkpoint
from train.errors import TrainingError
folder = Path(sys.argv[1])
checkpoint.save(folder, {"w": torch.zeros(10)}, 0, 1)           # a small checkpoint that fits
# past the limit, write() fails with EFBIG, as on a full disk
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
try:
    checkpoint.save(folder, {"w": torch.zeros(1_000_000)}, 1, 0)  # 4 MB: the write fails half-way
except TrainingError as exc:
    print("TrainingError:", exc)
    sys.exit(3)
"""


def test_a_checkpoint_write_that_fails_leaves_no_temporary_file(tmp_path):
    folder = tmp_path / "checkpoints"
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(folder)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    assert "Could not write the checkpoint" in result.stdout and "Free space on the job's volume" in result.stdout
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint-e0000-s0000001.pt"
    ]  # the earlier one kept, no .tmp file


def iam_policy() -> dict:
    text = (REPO / "docs" / "sagemaker.md").read_text()
    block = text.split("### The launcher policy", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return json.loads(block)


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_iam_policy_tags_and_deletes_only_byoc_named_resources():
    """Tagging, changing and deleting SageMaker resources need a byoc-* ARN; the launcher's names always match it."""
    from sagemaker_launch import aws, validate
    from sagemaker_launch.errors import LaunchError

    write = re.compile(r"^sagemaker:(AddTags|Create|Delete|Update|Stop)")
    statements = [s for s in iam_policy()["Statement"] if any(write.match(a) for a in as_list(s["Action"]))]
    assert statements
    patterns = []
    for statement in statements:
        resources = as_list(statement["Resource"])
        assert all(r.split(":", 5)[5].split("/", 1)[1] == "byoc-*" for r in resources), statement["Sid"]
        patterns += resources
        if any(a.startswith(("sagemaker:Delete", "sagemaker:Stop", "sagemaker:Update")) for a in statement["Action"]):
            assert statement["Condition"]["StringEquals"]["aws:ResourceTag/created-by"] == "byoc-vision"
    arn = "arn:aws:sagemaker:us-east-1:123456789012:{}/{}"
    for kind, prefix in (
        ("training-job", "byoc-train"),
        ("hyper-parameter-tuning-job", "byoc-tune"),
        ("endpoint", "byoc-endpoint"),
        ("transform-job", "byoc-transform"),
    ):
        assert any(fnmatch(arn.format(kind, aws.unique_name(prefix)), p) for p in patterns), kind
    assert not any(fnmatch(arn.format("endpoint", "someone-elses-endpoint"), p) for p in patterns)
    with pytest.raises(LaunchError, match="names start with byoc-"):
        validate.job_name("someone-elses-endpoint")


@pytest.mark.container
def test_build_context_leaves_out_git_venv_and_test_output(tmp_path):
    reason = docker_available()
    if reason:
        pytest.skip(reason)
    made = not (REPO / "byoc-output").exists()
    (REPO / "byoc-output").mkdir(exist_ok=True)  # what `train --wait` downloads by default
    dockerfile = "FROM debian:bookworm-slim\nCOPY . /context\nRUN ls -A /context\n"
    result = subprocess.run(
        ["docker", "buildx", "build", "--no-cache", "--progress", "plain", "-f", "-", "."],
        cwd=REPO,
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if made:
        (REPO / "byoc-output").rmdir()
    assert result.returncode == 0, result.stderr[-3000:]
    listed = set(re.findall(r"^#\d+ [\d.]+ (\S+)$", result.stderr, flags=re.M))
    assert {
        "train",
        "serve",
        "byoc_contract",
        "byoc_images",
        "byoc_machine",
        "byoc_openvino",
        "pyproject.toml",
    } <= listed, listed
    assert not {".git", ".venv", ".pytest_cache", "byoc-output", "tests"} & listed, listed
