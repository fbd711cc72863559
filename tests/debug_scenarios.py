"""Training runs with planted failures, on real Fashion-MNIST photos, saving tensors through the trainer's own
smdebug hook (``train.debugger.create_hook``): what the offline Debugger rules are tested against."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import fashion_mnist
import numpy as np
import torch
from torch import nn

from train.debugger import create_hook, record, set_mode


def photos(per_class: list[int], offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised 1x28x28 tensors and labels, ``per_class[c]`` photos of class c."""
    images, labels = fashion_mnist.load("train")
    index = np.concatenate([np.flatnonzero(labels == c)[offset : offset + n] for c, n in enumerate(per_class)])
    x = torch.from_numpy(images[index]).float().div(255).sub(0.286).div(0.353).unsqueeze(1)
    return x, torch.from_numpy(labels[index].astype(np.int64))


def small_cnn(batch_norm: bool = True) -> nn.Module:
    norm = nn.BatchNorm2d if batch_norm else (lambda _: nn.Identity())
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=not batch_norm),
        norm(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=not batch_norm),
        norm(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def deep_sigmoid_mlp(depth: int = 12) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(784, 64), nn.Sigmoid()]
    for _ in range(depth - 1):
        layers += [nn.Linear(64, 64), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(64, 10))


def wide_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )


def scale_init(model: nn.Module, std: float) -> nn.Module:
    """Every conv/linear weight drawn from N(0, std), biases zero: a planted bad initialisation."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0, std)
                if m.bias is not None:
                    m.bias.zero_()
    return model


def train(
    out: Path,
    model: Callable[[], nn.Module],
    optimizer: Callable,
    data,
    epochs: int,
    batch: int = 64,
    interval: int = 5,
) -> Path:
    """Train with the trainer's hook (TRAIN steps, then one EVAL pass per epoch) and close it; returns ``out``."""
    torch.manual_seed(0)
    model = model()
    (x, y), (vx, vy) = data
    loss_fn = nn.CrossEntropyLoss()
    hook = create_hook(str(out), interval, "losses,weights,gradients,biases", model, loss_fn)
    opt = optimizer(model.parameters())
    for _ in range(epochs):
        set_mode(hook, "TRAIN")
        model.train()
        order = torch.randperm(len(y))
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            logits = model(x[idx])
            record(hook, y[idx], logits)  # before the loss: the hook writes them when the loss module runs
            loss = loss_fn(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        set_mode(hook, "EVAL")
        model.eval()
        with torch.no_grad():
            for i in range(0, len(vy), 256):
                logits = model(vx[i : i + 256])
                record(hook, vy[i : i + 256], logits)
                loss_fn(logits, vy[i : i + 256])
    hook.close()
    return out


def balanced(train_per_class: int, valid_per_class: int = 50):
    return photos([train_per_class] * 10), photos([valid_per_class] * 10, offset=train_per_class)


def adam(lr: float = 1e-3):
    return lambda params: torch.optim.Adam(params, lr=lr)


def sgd(lr: float):
    return lambda params: torch.optim.SGD(params, lr=lr)


SCENARIOS: dict[str, Callable[[Path], Path]] = {
    "healthy": lambda out: train(out, small_cnn, adam(), balanced(500), epochs=2),
    "vanishing gradient": lambda out: train(out, deep_sigmoid_mlp, sgd(0.01), balanced(200), epochs=3),
    "loss stops decreasing": lambda out: train(out, small_cnn, sgd(1e-6), balanced(200), epochs=3),
    "overfitting": lambda out: train(out, wide_mlp, adam(), balanced(10), epochs=30, batch=20),
    "bad initialisation": lambda out: train(
        out, lambda: scale_init(small_cnn(batch_norm=False), 0.2), adam(), balanced(200), epochs=2
    ),
    "exploding": lambda out: train(out, wide_mlp, sgd(50.0), balanced(100), epochs=2),
    "class imbalance": lambda out: train(
        out, small_cnn, adam(), (photos([300] * 9 + [12]), photos([60] * 9 + [3], offset=300)), epochs=3
    ),
}
