"""GPU training throughput: ResNet-50 at 224 px, bf16 autocast, channels_last, torch.compile, fused AdamW.

- synthetic: random batches already on the GPU, the model's own limit;
- real JPEG, GPU decode: DataLoader workers only read the files' bytes; nvJPEG decodes the batch on the GPU
  (``torchcodec.decoders.decode_jpeg(device='cuda')``; torchvision 0.29 deprecates its own decoders), then random
  resized crop, flip and normalise run there too;
- real JPEG, CPU decode: the trainer's own loader (PIL, ``--workers auto``), pinned and copied asynchronously.

GPU utilisation comes from the trainer's profiler sampler (NVML). Without a CUDA device the result says so and
nothing is measured, unless ``--allow-cpu`` (the smoke test) runs the same code on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bench.input_pipeline import IMAGENET
from bench.machine import describe
from bench.photos import write_jpeg_folder
from bench.report import save
from bench.stats import summary
from train.data import ImageDataset, loader_settings
from train.engine import DeviceInput
from train.models import build_network
from train.profiler import SystemSampler
from train.sources import FolderSource, Split
from train.transforms import Preprocess, train_pixels

PEER = {"name": "NVIDIA's published A100 80GB, ResNet-50 v1.5, AMP", "images_per_sec": 2470}
TARGET_SYNTHETIC = 3000
TARGET_REAL_SHARE = 0.9


class FileBytes(Dataset):
    """(encoded JPEG as a uint8 tensor, label): the only work left to the CPU with GPU decoding."""

    def __init__(self, source: FolderSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        return torch.frombuffer(
            bytearray(self.source.files[index].read_bytes()), dtype=torch.uint8
        ), self.source.labels[index]


def bytes_batch(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's files packed into one uint8 tensor with their end offsets: one shared-memory block per batch
    to hand from a worker to the main process, not one per file (which runs out of descriptors, or fails under
    gVisor)."""
    packed = torch.cat([data for data, _ in items])
    ends = torch.tensor([len(data) for data, _ in items]).cumsum(0)
    return packed, ends, torch.tensor([label for _, label in items])


class Trainer:
    """One optimised training step, the same for every input path."""

    def __init__(self, args: argparse.Namespace, device: torch.device, classes: int):
        self.device = device
        model = build_network(args.model, classes, "none").model.to(device).to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
        self.model = torch.compile(model) if args.compile else model
        self.loss = nn.CrossEntropyLoss()
        self.inputs = DeviceInput(device, True, *IMAGENET)

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        images = self.inputs(images)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            loss = self.loss(self.model(images), labels.to(self.device, non_blocking=True))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(trainer: Trainer, batches, steps: int, warmup: int, reps: int, batch: int, sampler_path: Path) -> dict:
    """Images/s over ``reps`` runs of ``steps`` steps after ``warmup`` steps (compilation happens there), with GPU
    use."""
    source = iter(batches)
    for _ in range(warmup):
        trainer.step(*next(source))
    synchronize(trainer.device)
    values = []
    with SystemSampler(sampler_path, 0.2):
        for _ in range(reps):
            started = time.perf_counter()
            for _ in range(steps):
                trainer.step(*next(source))
            synchronize(trainer.device)
            values.append(steps * batch / (time.perf_counter() - started))
    rows = [json.loads(line) for line in sampler_path.read_text().splitlines()]
    gpu = [row["gpus"][0]["util"] for row in rows if row.get("gpus")]
    cpu = [row["cpu"] for row in rows]
    return {
        **summary(values),
        "gpu_util_mean": round(statistics.mean(gpu), 1) if gpu else None,
        "cpu_util_mean": round(statistics.mean(cpu), 1) if cpu else None,
    }


def forever(loader, transform=None):
    """Endless batches from ``loader`` (epoch after epoch), optionally transformed."""
    while True:
        for batch in loader:
            yield transform(*batch) if transform else batch[:2]


def synthetic(args: argparse.Namespace, device: torch.device):
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, 1000, (args.batch_size,), device=device)
    while True:
        yield images, labels


def gpu_decoder(pre: Preprocess, device: torch.device):
    """Batch of encoded JPEGs -> uint8 crops on the GPU (nvJPEG, then crop and flip there; the trainer normalises)."""
    from torchcodec.decoders import decode_jpeg
    from torchvision.transforms import v2

    augment = v2.Compose([v2.RandomResizedCrop(pre.crop, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip()])

    def run(packed: torch.Tensor, ends: torch.Tensor, labels: torch.Tensor):
        starts = [0, *ends[:-1].tolist()]
        encoded = [packed[start:end] for start, end in zip(starts, ends.tolist(), strict=False)]
        decoded = decode_jpeg(encoded, mode="RGB", device=device)
        return torch.stack([augment(image) for image in decoded]), labels

    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per repetition")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (torch.compile compiles here)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--photos", type=int, default=5000, help="real JPEG files for the real-input runs")
    parser.add_argument("--side", type=int, default=320, help="side of the JPEG files in px")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument(
        "--allow-cpu", action="store_true", help="run on the CPU when there is no GPU (smoke test only)"
    )
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report: dict = {
        "machine": describe(),
        "settings": vars(args),
        "peer": PEER,
        "target_synthetic": TARGET_SYNTHETIC,
        "target_real_share": TARGET_REAL_SHARE,
    }
    if device.type == "cpu" and not args.allow_cpu:
        report["skipped"] = "no CUDA device on this machine; run `python -m bench gpu` where there is one"
        save("train_gpu.json", report)
        return report
    report["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    pre = Preprocess(resize=round(args.image_size / 0.875), crop=args.image_size, mean=IMAGENET[0], std=IMAGENET[1])
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trainer = Trainer(args, device, 1000)
        runs["synthetic"] = timed_steps(
            trainer,
            synthetic(args, device),
            args.steps,
            args.warmup,
            args.reps,
            args.batch_size,
            work / "synthetic.jsonl",
        )
        print(f"synthetic: {runs['synthetic']}", flush=True)
        source = FolderSource(write_jpeg_folder(work / "jpeg", args.photos, args.side))
        workers, prefetch = loader_settings(None)
        common = {
            "batch_size": args.batch_size,
            "shuffle": True,
            "drop_last": True,
            "num_workers": workers,
            "prefetch_factor": prefetch,
            "persistent_workers": workers > 0,
        }
        if device.type == "cuda":
            loader = DataLoader(FileBytes(source), collate_fn=bytes_batch, **common)
            runs["real JPEG, GPU decode (nvJPEG)"] = timed_steps(
                trainer,
                forever(loader, gpu_decoder(pre, device)),
                args.steps,
                args.warmup,
                args.reps,
                args.batch_size,
                work / "gpu.jsonl",
            )
        else:
            runs["real JPEG, GPU decode (nvJPEG)"] = {"skipped": "needs a CUDA device"}
        dataset = ImageDataset(
            Split(source, list(range(len(source)))), train_pixels(pre, "light"), strict=False, fit=pre.fit(resize=False)
        )
        loader = DataLoader(dataset, pin_memory=device.type == "cuda", **common)
        runs["real JPEG, CPU decode (PIL, trainer's loader)"] = timed_steps(
            trainer, forever(loader), args.steps, args.warmup, args.reps, args.batch_size, work / "cpu.jsonl"
        )
        print(f"real: {runs}", flush=True)
    report["runs"] = runs
    report["workers"] = workers
    save("train_gpu.json", report)
    return report


if __name__ == "__main__":
    main()
