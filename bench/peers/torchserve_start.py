"""Archive the artifact for TorchServe 0.12 and run it in the foreground on 0.0.0.0:8080.

``python -m bench.peers.torchserve_start`` turns ``/opt/ml/model`` (``model.json`` + ``weights.safetensors``) into
an unzipped model archive: a model file, a state dict, ``index_to_name.json`` and a ``model-config.yaml`` with
server-side batching (batch size 8, max delay 50 ms, as TorchServe's batch inference docs show). ``PEER_CONFIG=default``
uses the stock ``image_classifier`` handler and TorchServe's default worker count (one per core); ``best`` uses
``ts_handler.py`` (the same handler, forward pass in ``PEER_MODE``) with one worker that gets every core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
STORE = Path("/tmp/model-store")
WORK = Path("/tmp/archive")
RESNETS = {
    "resnet18": ("BasicBlock", [2, 2, 2, 2]),
    "resnet34": ("BasicBlock", [3, 4, 6, 3]),
    "resnet50": ("Bottleneck", [3, 4, 6, 3]),
}


def model_file(info: dict) -> str:
    """TorchServe instantiates the one class of the model file without arguments."""
    if info["architecture"] not in RESNETS:
        raise SystemExit(f"the TorchServe peer serves {', '.join(RESNETS)}; the artifact is {info['architecture']}")
    block, layers = RESNETS[info["architecture"]]
    return (
        "from torchvision.models import resnet\n\n\n"
        "class Net(resnet.ResNet):\n"
        "    def __init__(self):\n"
        f"        super().__init__(resnet.{block}, {layers}, num_classes={info['num_classes']})\n"
    )


def archive(model_dir: Path, best: bool) -> None:
    info = json.loads((model_dir / "model.json").read_text())  # raw, as another stack would: no byoc packages here
    WORK.mkdir(parents=True, exist_ok=True)
    STORE.mkdir(parents=True, exist_ok=True)
    (WORK / "model.py").write_text(model_file(info))
    torch.save(load_file(model_dir / "weights.safetensors"), WORK / "model.pt")
    (WORK / "index_to_name.json").write_text(json.dumps({str(i): name for i, name in enumerate(info["classes"])}))
    workers = "minWorkers: 1\nmaxWorkers: 1\n" if best else ""
    (WORK / "model-config.yaml").write_text(f"batchSize: 8\nmaxBatchDelay: 50\nresponseTimeout: 120\n{workers}")
    handler = str(HERE / "ts_handler.py") if best else "image_classifier"
    subprocess.run(
        [
            "torch-model-archiver",
            "--model-name",
            "model",
            "--version",
            "1.0",
            "--model-file",
            str(WORK / "model.py"),
            "--serialized-file",
            str(WORK / "model.pt"),
            "--handler",
            handler,
            "--extra-files",
            str(WORK / "index_to_name.json"),
            "--config-file",
            str(WORK / "model-config.yaml"),
            "--archive-format",
            "no-archive",
            "--export-path",
            str(STORE),
            "--force",
        ],
        check=True,
    )


def main() -> None:
    best = os.environ.get("PEER_CONFIG", "default") == "best"
    archive(Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model")), best)
    config = WORK / "config.properties"
    config.write_text(
        "inference_address=http://0.0.0.0:8080\n"
        "management_address=http://127.0.0.1:8081\n"
        "metrics_address=http://127.0.0.1:8082\n"
        "disable_token_authorization=true\ninstall_py_dep_per_model=false\n"
    )
    os.execvp(
        "torchserve",
        [
            "torchserve",
            "--foreground",
            "--ncs",
            "--model-store",
            str(STORE),
            "--models",
            "model=model",
            "--ts-config",
            str(config),
        ],
    )


if __name__ == "__main__":
    sys.exit(main())
