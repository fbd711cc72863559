"""The trainer, top to bottom: data -> model -> fit -> evaluate -> export the artifact."""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import threading
import traceback
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from train import checkpoint, distributed, sagemaker_env
from train.data import ImageDataset, ResumableSampler, balanced_weights, class_loss_weights, collate_skipping, core_share, loader_settings
from train.decoded_cache import CachedImageDataset, DecodedImages, open_or_build
from train.debugger import create_hook, record, set_mode
from train.engine import DeviceInput, EpochProgress, Precision, cross_entropy, predict, resolve_precision, softmax, train_one_epoch
from train.errors import Interrupted, TrainingError, write_failure
from train.export import write_artifact
from train.features import extract, feature_loader
from train.metric_log import format_line
from train.metrics import classification_metrics
from train.models import build_network, set_policy, train_mode
from train.profiler import StepTimer, SystemSampler, write_run_info
from train.report import draw_confusion_matrix, write_class_report
from train.sources import Split, Splits, load_splits
from train.transforms import Preprocess, eval_pixels, eval_transform, train_pixels

log = logging.getLogger("train")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def configure_logging(is_main: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def resolve_pretrained(choice: str) -> str:
    """``auto``: the single weights file of the 'pretrained' channel, else ImageNet weights by download.
    A bare file name is looked up in the 'pretrained' channel."""
    channel = sagemaker_env.channel_dir("pretrained")
    if choice not in ("auto", "imagenet", "none") and not Path(choice).exists() and (channel / choice).is_file():
        return str(channel / choice)
    if choice != "auto":
        return choice
    files = sorted(p for p in channel.rglob("*") if p.suffix in WEIGHT_SUFFIXES) if channel.is_dir() else []
    if len(files) > 1:
        raise TrainingError(f"The 'pretrained' channel holds several weight files ({', '.join(p.name for p in files)}); name one with --pretrained.")
    return str(files[0]) if files else "imagenet"


def require_compiler(device: torch.device) -> None:
    """torch.compile generates C++ (CPU) or Triton launchers (GPU), both built with a C compiler at run time."""
    import shutil

    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        raise TrainingError(
            f"--compile needs a C compiler to build its {'Triton' if device.type == 'cuda' else 'C++'} kernels, and this "
            "image has none (compilers stay out of the training image). Drop --compile, or build an image that adds gcc."
        )


def lr_factor(step: int, steps_per_epoch: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine to zero, step decay, or constant."""
    warmup = args.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if args.scheduler == "cosine":
        done = (step - warmup) / max(1.0, args.epochs * steps_per_epoch - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
    if args.scheduler == "step":
        return args.gamma ** (step // (args.step_size * steps_per_epoch))
    return 1.0


def build_optimizer(args: argparse.Namespace, head: list[nn.Parameter], backbone: list[nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
    """Head at --lr, unfrozen backbone at --backbone-lr; no weight decay on biases and norm weights.
    On CUDA, AdamW runs fused (one kernel for every parameter)."""
    backbone_lr = args.backbone_lr if args.backbone_lr is not None else args.lr / 10
    groups = []
    for params, lr in ((head, args.lr), (backbone, backbone_lr)):
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups += [{"params": decay, "lr": lr, "weight_decay": args.weight_decay}, {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=args.momentum, nesterov=True)
    return torch.optim.AdamW(groups, fused=device.type == "cuda")


def open_decoded(splits: Splits, preprocess: Preprocess, args: argparse.Namespace, ctx: distributed.Context) -> dict[int, DecodedImages]:
    """Decoded-image cache entries of the splits' sources (by ``id``); empty when the cache is off or cannot fit."""
    if args.decoded_cache == "off":
        return {}
    root = sagemaker_env.decoded_cache_dir() if args.decoded_cache == "auto" else Path(args.decoded_cache)
    workers = core_share(ctx.local_world_size)  # nothing else runs yet: every core of the rank's share decodes
    entries = {}
    for split in (splits.train, splits.valid, splits.test):
        if split is not None and id(split.source) not in entries:
            entry = open_or_build(split.source, preprocess, root, workers, args.strict_data)
            if entry is None:
                return {}
            entries[id(split.source)] = entry
    return entries


def image_loader(
    split: Split, transform, args: argparse.Namespace, sampler: ResumableSampler, ctx: distributed.Context, decoded: dict[int, DecodedImages]
) -> DataLoader:
    """Batches of one split, from the decoded-image cache when it holds the split's source."""
    entry = decoded.get(id(split.source))
    dataset = CachedImageDataset(split, entry, transform) if entry else ImageDataset(split, transform, strict=args.strict_data)
    workers, prefetch = loader_settings(args.workers, ctx.local_world_size)
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=workers,
        prefetch_factor=prefetch,
        collate_fn=collate_skipping,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=workers > 0,
    )


def evaluate(forward, loader, precision: Precision, inputs: DeviceInput, ctx: distributed.Context, prefix: str, hook, loss_fn: nn.Module):
    """Metrics of one split, gathered over ranks: (metrics with ``prefix_``, probabilities, targets, skipped).

    With a Debugger hook, the loss and the labels/predictions of each batch go through it.
    """
    logits, targets, skipped = predict(
        forward, loader, precision, inputs, prefix, loss_fn if hook else None, partial(record, hook)
    )
    parts = distributed.gather((logits, targets, skipped), ctx)
    logits = np.concatenate([p[0] for p in parts if len(p[1])]) if any(len(p[1]) for p in parts) else logits
    targets = np.concatenate([p[1] for p in parts])
    skipped = [s for p in parts for s in p[2]]
    probabilities = softmax(logits) if len(targets) else logits
    metrics = {"loss": cross_entropy(logits, targets), **(classification_metrics(probabilities, targets) if len(targets) else {})}
    return {f"{prefix}_{k}": v for k, v in metrics.items()}, probabilities, targets, skipped


def run(args: argparse.Namespace) -> dict:
    """Train, evaluate and export; returns the final metrics. Raises TrainingError / Interrupted."""
    ctx = distributed.setup()
    configure_logging(ctx.is_main)
    seed_everything(args.seed, args.deterministic)
    splits = load_splits(
        Path(args.train), Path(args.valid), Path(args.test), args.valid_fraction, args.test_fraction, args.seed
    )
    classes = splits.classes
    log.info(
        "data: %s layout, %d classes, %d train / %d valid / %s test images",
        splits.layout, len(classes), len(splits.train), len(splits.valid), len(splits.test) if splits.test else "no",
    )
    net = build_network(args.model, len(classes), resolve_pretrained(args.pretrained))
    preprocess = Preprocess(
        resize=args.resize_size or round(args.image_size / 0.875), crop=args.image_size, mean=net.mean, std=net.std, interpolation=net.interpolation
    )
    head_params, backbone_params = set_policy(net, args.finetune, args.unfreeze_stages)
    model = net.model.to(ctx.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    precision = resolve_precision(args.amp, ctx.device)
    log.info(
        "model: %s, %s, %d trainable of %d parameters, %s on %s, %d process(es)",
        args.model, args.finetune, sum(p.numel() for p in head_params + backbone_params), sum(p.numel() for p in model.parameters()),
        precision.name, ctx.device, ctx.world_size,
    )

    loss_weight = class_loss_weights(splits.train.labels, len(classes)).to(ctx.device) if args.imbalance == "weighted-loss" else None
    loss_fn = nn.CrossEntropyLoss(weight=loss_weight, label_smoothing=args.label_smoothing)
    hook = (
        create_hook(args.debugger_out, args.debugger_interval, args.debugger_collections, model, loss_fn, activations=precision.dtype is None)
        if ctx.is_main
        else None
    )

    sample_weights = balanced_weights(splits.train.labels, len(classes)) if args.imbalance == "balanced-sampler" else None
    train_sampler = ResumableSampler(len(splits.train), shuffle=True, seed=args.seed, rank=ctx.rank, world_size=ctx.world_size, weights=sample_weights)

    def eval_sampler(split: Split) -> ResumableSampler:
        return ResumableSampler(len(split), shuffle=False, seed=args.seed, rank=ctx.rank, world_size=ctx.world_size)

    eval_tf = eval_pixels(preprocess)
    inputs = DeviceInput(ctx.device, args.channels_last, preprocess.mean, preprocess.std)
    cached = args.feature_cache == "auto" and args.finetune == "head" and args.augment == "none" and not ctx.enabled
    decoded = {} if cached else open_decoded(splits, preprocess, args, ctx)  # cached features decode each image once anyway
    valid_loader = image_loader(splits.valid, eval_tf, args, eval_sampler(splits.valid), ctx, decoded)
    test_loader = image_loader(splits.test, eval_tf, args, eval_sampler(splits.test), ctx, decoded) if splits.test else None
    skipped: set[str] = set()
    if cached:
        log.info("backbone frozen and no augmentation: caching its features once, then training the head alone")
        sequential = ResumableSampler(len(splits.train), shuffle=False, seed=args.seed)
        features, labels, bad = extract(model, net.head, image_loader(splits.train, eval_tf, args, sequential, ctx, decoded), precision, inputs, "train")
        skipped.update(f"train:{p}" for p in bad)
        train_sampler = ResumableSampler(len(labels), shuffle=True, seed=args.seed, weights=balanced_weights(labels.tolist(), len(classes)) if sample_weights is not None else None)
        train_loader = feature_loader(features, labels, args.batch_size, train_sampler)
        valid_loader = feature_loader(*extract(model, net.head, valid_loader, precision, inputs, "valid")[:2], args.batch_size, None)
        if test_loader is not None:
            test_loader = feature_loader(*extract(model, net.head, test_loader, precision, inputs, "test")[:2], args.batch_size, None)
        forward: nn.Module = net.head
        eval_forward: nn.Module = net.head
    else:
        if args.feature_cache == "auto" and args.finetune == "head":
            log.info("feature cache off: it needs --augment none and a single process")
        train_loader = image_loader(splits.train, train_pixels(preprocess, args.augment), args, train_sampler, ctx, decoded)
        forward = model
        eval_forward = model
        if ctx.enabled:
            forward = nn.parallel.DistributedDataParallel(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
        if args.compile:
            require_compiler(ctx.device)
            forward = torch.compile(forward)
            eval_forward = torch.compile(model)

    steps_per_epoch = len(train_loader)
    optimizer = build_optimizer(args, head_params, backbone_params, ctx.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, args))
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision.dtype == torch.float16)

    checkpoint_dir = Path(args.checkpoint_dir)
    start_epoch, progress, history, best, bad_epochs = 0, EpochProgress(), [], {"value": None, "epoch": 0, "weights": None}, 0
    resumed = checkpoint.load_latest(checkpoint_dir)
    if resumed is not None:
        try:
            net.model.load_state_dict(resumed["model"])
            optimizer.load_state_dict(resumed["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainingError(
                f"The checkpoint in {checkpoint_dir} was written by a different model or settings ({exc}). "
                "Use an empty checkpoint location for a new job, or the same --model/--finetune to resume."
            ) from exc
        scheduler.load_state_dict(resumed["scheduler"])
        scaler.load_state_dict(resumed["scaler"])
        checkpoint.restore_rng(resumed["rng"])
        start_epoch, history, best, bad_epochs = resumed["epoch"], resumed["history"], resumed["best"], resumed["bad_epochs"]
        progress = EpochProgress(**resumed["progress"])
        skipped.update(resumed["skipped"])
        if start_epoch >= args.epochs:
            log.info("the checkpoint has finished all %d epochs: evaluating and exporting its best weights again", args.epochs)

    def save_checkpoint(epoch: int) -> None:
        if ctx.is_main:
            state = {
                "epoch": epoch, "step": progress.step, "model": net.model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": checkpoint.rng_state(),
                "progress": progress.state(), "history": history, "best": best, "bad_epochs": bad_epochs, "skipped": sorted(skipped),
            }
            checkpoint.save(checkpoint_dir, state, epoch, progress.step)

    writer = None
    if ctx.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(args.tensorboard_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    higher_is_better = not args.early_stopping_metric.endswith("loss")

    profile_dir = Path(args.output_data_dir) / "profiler"
    profiling = ctx.is_main and args.profiler_interval > 0
    if profiling:
        if resumed is None:
            shutil.rmtree(profile_dir, ignore_errors=True)
        write_run_info(profile_dir, ctx.device, loader_settings(args.workers, ctx.local_world_size)[0], args.batch_size, args.model)
    timer = StepTimer(profile_dir / "steps.jsonl" if profiling else None, ctx.device)
    observe = partial(record, hook)
    with SystemSampler(profile_dir / "system.jsonl", args.profiler_interval) if profiling else nullcontext():
        for epoch in range(start_epoch, args.epochs):
            train_sampler.set_epoch(epoch, start=progress.step * args.batch_size)
            set_mode(hook, "TRAIN")
            train_mode(model)
            progress = train_one_epoch(
                forward, loss_fn, optimizer, scheduler, scaler, train_loader, precision, inputs,
                progress=progress, epoch=epoch, clip_grad_norm=args.clip_grad_norm,
                should_stop=lambda: distributed.any_rank(stop.is_set(), ctx), timer=timer, observe=observe,
            )
            skipped.update(f"train:{p}" for p in progress.skipped)
            if progress.interrupted:
                save_checkpoint(epoch)
                raise Interrupted(
                    f"Stopped by SIGTERM during epoch {epoch + 1} after {progress.step} steps; a checkpoint was saved in "
                    f"{checkpoint_dir}. Start the job again with the same checkpoint location to resume from that step."
                )
            set_mode(hook, "EVAL")
            model.eval()
            valid, *_, bad = evaluate(eval_forward, valid_loader, precision, inputs, ctx, "valid", hook, loss_fn)
            skipped.update(f"valid:{p}" for p in bad)
            seen = sum(distributed.gather(progress.seen, ctx))
            row = {
                "train_loss": progress.loss_sum / max(progress.seen, 1), "train_acc": progress.correct / max(progress.seen, 1),
                "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": progress.seconds, "images_per_sec": seen / max(progress.seconds, 1e-9),
                **valid, "skipped_images": len(skipped),
            }
            history.append({"epoch": epoch + 1, **row})
            value = row[args.early_stopping_metric]
            improved = best["value"] is None or (value > best["value"] if higher_is_better else value < best["value"])
            if improved:
                best = {"value": value, "epoch": epoch + 1, "weights": {k: v.detach().cpu().clone() for k, v in net.model.state_dict().items()}}
                bad_epochs = 0
            else:
                bad_epochs += 1
            progress = EpochProgress()
            save_checkpoint(epoch + 1)
            if ctx.is_main:
                print(format_line(row, epoch + 1), flush=True)
                for name, v in row.items():
                    writer.add_scalar(name.replace("_", "/", 1), v, epoch + 1)
                writer.flush()
            if args.early_stopping_patience and bad_epochs >= args.early_stopping_patience:
                log.info("early stopping: %s has not improved for %d epochs (best %.4f at epoch %d)", args.early_stopping_metric, bad_epochs, best["value"], best["epoch"])
                break

        if best["weights"] is not None:
            net.model.load_state_dict(best["weights"])
            log.info("using the weights of epoch %d (best %s = %.4f)", best["epoch"], args.early_stopping_metric, best["value"])
        model.eval()
        final = dict(history[-1]) if history else {}
        final.update({"best_epoch": best["epoch"], f"best_{args.early_stopping_metric}": best["value"]})
        report_split, report_loader = ("test", test_loader) if test_loader is not None else ("valid", valid_loader)
        metrics, probabilities, targets, bad = evaluate(eval_forward, report_loader, precision, inputs, ctx, report_split, hook, loss_fn)
        skipped.update(f"{report_split}:{p}" for p in bad)
        final.update(metrics)
        final["skipped_images"] = len(skipped)
        if hook is not None:
            hook.close()
    distributed.teardown(ctx)
    if not ctx.is_main:
        return final
    print(format_line({k: v for k, v in final.items() if k.startswith("test_")} | {"skipped_images": len(skipped)}), flush=True)
    writer.close()
    out = Path(args.output_data_dir)
    out.mkdir(parents=True, exist_ok=True)
    predicted = probabilities.argmax(axis=1)
    write_class_report(out / f"{report_split}_report", classes, predicted, targets)
    draw_confusion_matrix(out / f"{report_split}_confusion_matrix.png", classes, predicted, targets, f"{args.model} on {report_split}")
    (out / "metrics.json").write_text(json.dumps({"final": final, "history": history}, indent=2))
    valid_images = ImageDataset(splits.valid, eval_transform(preprocess), strict=False)  # the float input serving feeds
    sample = collate_skipping([valid_images[i] for i in range(min(4, len(valid_images)))])[0]
    write_artifact(
        Path(args.model_dir), net.model, arch=args.model, classes=classes, preprocess=preprocess, sample=sample,
        metrics=final, hyperparameters=vars(args),
        data={"layout": splits.layout, "train": len(splits.train), "valid": len(splits.valid), "test": len(splits.test) if splits.test else 0, "skipped_images": len(skipped)},
    )
    log.info("artifact written to %s", args.model_dir)
    if profiling:
        write_profiling_report(out)
    return final


def write_profiling_report(out: Path) -> None:
    """Render the profiling report into ``out``; a failure here is logged and does not fail the finished job."""
    from train.debug.html_report import render
    from train.debug.verdicts import table

    try:
        path, verdicts = render(out, {})
    except Exception:  # the model is already saved: report the bug, keep the job's result
        log.exception("the profiling report could not be rendered (the model and metrics are saved); please report this")
        return
    log.info("profiling report: %s\n%s", path, table(verdicts))


def run_and_report(args: argparse.Namespace) -> int:
    """Run; on failure write the reason to /opt/ml/output/failure and return a non-zero exit code."""
    try:
        run(args)
        return 0
    except TrainingError as exc:
        reason, code = str(exc), 1
    except Interrupted as exc:
        reason, code = str(exc), 143
    except torch.OutOfMemoryError as exc:
        reason = (
            f"CUDA ran out of memory with --batch-size {args.batch_size} ({str(exc).splitlines()[0]}). Lower --batch-size, "
            "use --amp bf16, --finetune head or last-k, or a GPU with more memory."
        )
        code = 1
    except Exception as exc:  # anything else is our bug: keep the traceback in the log, a summary for SageMaker
        traceback.print_exc()
        reason, code = f"Unexpected error {type(exc).__name__}: {exc}. The traceback is in the job's log; please report it.", 1
    write_failure(reason)
    logging.getLogger("train").error("training failed: %s", reason)
    return code
