"""The peers' shared pieces (bench/peers/), on the host's torch: the TorchServe model file loads the artifact's weights,
and every torch mode that needs no compiler gives eager's answers."""

import json

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from bench.peers import torch_model
from bench.peers.torchserve_start import model_file


@pytest.fixture
def artifact(tmp_path):
    model = torchvision.models.resnet18(num_classes=3).eval()
    save_file(model.state_dict(), tmp_path / "weights.safetensors")
    info = {
        "architecture": "resnet18",
        "num_classes": 3,
        "classes": ["a", "b", "c"],
        "preprocess": {"resize": 36, "crop": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    (tmp_path / "model.json").write_text(json.dumps(info))
    return tmp_path, model


def test_torchserve_model_file_instantiates_without_arguments_and_takes_the_weights(artifact):
    folder, original = artifact
    namespace = {}
    exec(model_file(json.loads((folder / "model.json").read_text())), namespace)  # our own generated source
    net = namespace["Net"]()
    loaded, _ = torch_model.load(folder)
    net.load_state_dict(loaded.state_dict())
    batch = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net.eval()(batch), original(batch))


def test_unsupported_architectures_are_refused_with_the_supported_list():
    with pytest.raises(SystemExit, match="serves resnet18, resnet34, resnet50; the artifact is vit_b_16"):
        model_file({"architecture": "vit_b_16", "num_classes": 3})


def test_modes_agree_with_eager_and_unknown_modes_are_refused(artifact):
    folder, _ = artifact
    model, info = torch_model.load(folder)
    assert [t.__class__.__name__ for t in torch_model.eval_transform(info).transforms] == [
        "Resize",
        "CenterCrop",
        "ToTensor",
        "Normalize",
    ]
    batch = torch.randn(4, 3, 32, 32)
    eager = torch_model.prepare(model, "eager")(batch)
    bf16 = torch_model.prepare(model, "bf16")(batch)
    assert bf16.dtype == torch.float32 and torch.allclose(bf16, eager, atol=0.1, rtol=0.1)
    with pytest.raises(SystemExit, match="PEER_MODE='fast': use one of eager, bf16, inductor-bf16, openvino"):
        torch_model.prepare(model, "fast")
