"""The trainer, top to bottom: data -> model -> fit -> evaluate -> export the artifact."""

from __future__ import annotations

import argparse
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

from byoc_contract.metric_log import format_line
from byoc_contract.model_json import MAX_SIDE
from byoc_contract.rules import DEFAULT_RULES, StopRuleNotJudged, collections_for, selection
from train import distributed, run_outputs, sagemaker_env
from train.calibration import calibrate
from train.cores import core_share
from train.data import class_loss_weights, loader_settings
from train.debugger import create_hook, record, set_mode
from train.engine import DeviceInput, Precision, cross_entropy, predict, resolve_precision, softmax, train_one_epoch
from train.errors import Interrupted, TrainingError, reason_of, write_failure
from train.loaders import Loaders, build_loaders
from train.metrics import classification_metrics
from train.models import build_network, set_policy, train_mode
from train.profiler import StepTimer, SystemSampler, write_run_info
from train.sources import load_splits
from train.state import Trainables, TrainingState
from train.transforms import Preprocess

log = logging.getLogger("train")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def configure_logging(is_main: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "matplotlib"):
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
        raise TrainingError(
            f"The 'pretrained' channel holds several weight files ({', '.join(p.name for p in files)}); name one with "
            "--pretrained."
        )
    return str(files[0]) if files else "imagenet"


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


def group_schedules(optimizer: torch.optim.Optimizer, steps_per_epoch: int, args: argparse.Namespace) -> list:
    """One learning-rate factor per parameter group: the unfrozen backbone stages wait at 0 for --head-epochs
    (the new head learns first, so its random gradients never reach the pretrained stages), then follow the schedule."""
    head_steps = args.head_epochs * steps_per_epoch

    def backbone(step: int) -> float:
        return 0.0 if step < head_steps else lr_factor(step, steps_per_epoch, args)

    return [
        backbone if group["part"] == "backbone" else partial(lr_factor, steps_per_epoch=steps_per_epoch, args=args)
        for group in optimizer.param_groups
    ]


def build_optimizer(
    args: argparse.Namespace, head: list[nn.Parameter], backbone: list[nn.Parameter], device: torch.device
) -> torch.optim.Optimizer:
    """Head at --lr, unfrozen backbone at --backbone-lr; no weight decay on biases and norm weights.
    On CUDA, AdamW runs fused (one kernel for every parameter)."""
    backbone_lr = args.backbone_lr if args.backbone_lr is not None else args.lr / 10
    groups = []
    for params, lr in ((head, args.lr), (backbone, backbone_lr)):
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        part = "backbone" if params is backbone else "head"
        groups += [
            {"params": decay, "lr": lr, "weight_decay": args.weight_decay, "part": part},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0, "part": part},
        ]
    groups = [g for g in groups if g["params"]]
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=args.momentum, nesterov=True)
    return torch.optim.AdamW(groups, fused=device.type == "cuda")


def evaluate(
    forward,
    loader,
    precision: Precision,
    inputs: DeviceInput,
    ctx: distributed.Context,
    prefix: str,
    hook,
    loss_fn: nn.Module,
):
    """Metrics of one split, gathered over ranks: (metrics with ``prefix_``, logits, targets, skipped).

    With a Debugger hook, the loss and the labels/predictions of each batch go through it.
    """
    logits, targets, skipped = predict(
        forward, loader, precision, inputs, prefix, loss_fn if hook else None, partial(record, hook)
    )
    parts = distributed.gather((logits, targets, skipped), ctx)
    logits = np.concatenate([p[0] for p in parts if len(p[1])]) if any(len(p[1]) for p in parts) else logits
    targets = np.concatenate([p[1] for p in parts])
    skipped = [s for p in parts for s in p[2]]
    metrics = {
        "loss": cross_entropy(logits, targets),
        **(classification_metrics(softmax(logits), targets) if len(targets) else {}),
    }
    return {f"{prefix}_{k}": v for k, v in metrics.items()}, logits, targets, skipped


POOR_INIT = "PoorWeightInitialization"


def rule_settings(args: argparse.Namespace, pretrained: bool = False) -> tuple[list[str], list[str]]:
    """The in-job rules to judge and those that stop training, checked before any work. PoorWeightInitialization
    judges a network's random initialisation: by default it is left out when the network starts from trained weights."""
    try:
        names, stop_on = selection(args.debugger_rules, " ".join(args.stop_on_rule), "--debugger-rules")
    except StopRuleNotJudged as exc:
        raise TrainingError(f"{exc}.") from None
    except ValueError as exc:
        raise TrainingError(f"Bad --debugger-rules or --stop-on-rule: {exc}.") from None
    if pretrained and args.debugger_rules == ",".join(DEFAULT_RULES) and POOR_INIT not in stop_on:
        log.info(
            "%s is not judged: the network starts from pretrained weights (name it in --debugger-rules to judge "
            "it anyway)",
            POOR_INIT,
        )
        names = [n for n in names if n != POOR_INIT]
    return names, stop_on


def attach_rules(
    args: argparse.Namespace,
    names: list[str],
    stop_on: list[str],
    model: nn.Module,
    loss_fn: nn.Module,
    precision: Precision,
    ctx: distributed.Context,
):
    """The smdebug hook (SageMaker's config, --debugger-out, or the in-job rules' own folder) and the in-job rules.

    Returns ``(hook, rules)``; either may be None. Only the main process saves tensors and judges them.
    """
    if not ctx.is_main:
        return None, None
    out, collections = args.debugger_out, args.debugger_collections
    if not names:  # smdebug is imported only when something asks for it
        return create_hook(
            out, args.debugger_interval, collections, model, loss_fn, activations=precision.dtype is None, lean=False
        ), None
    from train.debug.in_job import InJobRules

    lean = not out  # the rules' own folder holds only what they read
    if lean:  # fresh for this process (the hook's steps restart at 0 on resume)
        out, collections = str(sagemaker_env.rule_tensors_dir()), ",".join(collections_for(names))
        if not sagemaker_env.debug_hook_config().is_file():
            shutil.rmtree(out, ignore_errors=True)
    else:
        collections = ",".join(sorted(set(collections.split(",")) | set(collections_for(names))))
    hook = create_hook(
        out, args.debugger_interval, collections, model, loss_fn, activations=precision.dtype is None, lean=lean
    )
    log.info(
        "in-job Debugger rules: %s, judged at each epoch end%s",
        ", ".join(names),
        f"; --stop-on-rule {', '.join(stop_on)}" if stop_on else "",
    )
    return hook, InJobRules(names, Path(hook.out_dir), stop_on)


def fit(
    args: argparse.Namespace,
    ctx: distributed.Context,
    loaders: Loaders,
    parts: Trainables,
    state: TrainingState,
    *,
    precision: Precision,
    inputs: DeviceInput,
    loss_fn: nn.Module,
    hook,
    rules,
    timer: StepTimer,
) -> None:
    """The epoch loop: train, validate, checkpoint, print the metric line; stops early, on SIGTERM, or on a rule."""
    checkpoint_dir = Path(args.checkpoint_dir)
    writer = None
    if ctx.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(args.tensorboard_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    save = partial(state.save, checkpoint_dir, parts) if ctx.is_main else lambda: None
    for epoch in range(state.epoch, args.epochs):
        loaders.train_sampler.set_epoch(epoch, start=state.progress.step * args.batch_size)
        set_mode(hook, "TRAIN")
        train_mode(parts.model)
        state.progress = train_one_epoch(
            loaders.forward,
            loss_fn,
            parts.optimizer,
            parts.scheduler,
            parts.scaler,
            loaders.train,
            precision,
            inputs,
            progress=state.progress,
            epoch=epoch,
            clip_grad_norm=args.clip_grad_norm,
            should_stop=lambda: distributed.any_rank(stop.is_set(), ctx),
            timer=timer,
            observe=partial(record, hook),
        )
        state.skipped.update(f"train:{p}" for p in state.progress.skipped)
        if state.progress.interrupted:
            save()
            raise Interrupted(
                f"Stopped by SIGTERM during epoch {epoch + 1} after {state.progress.step} steps; a checkpoint was "
                "saved in "
                f"{checkpoint_dir}. Start the job again with the same checkpoint location to resume from that step."
            )
        set_mode(hook, "EVAL")
        parts.model.eval()
        valid, *_, bad = evaluate(loaders.eval_forward, loaders.valid, precision, inputs, ctx, "valid", hook, loss_fn)
        state.skipped.update(f"valid:{p}" for p in bad)
        seen = sum(distributed.gather(state.progress.seen, ctx))
        progress = state.progress
        row = {
            "train_loss": progress.loss_sum / max(progress.seen, 1),
            "train_acc": progress.correct / max(progress.seen, 1),
            "lr": parts.optimizer.param_groups[0]["lr"],
            "epoch_seconds": progress.seconds,
            "images_per_sec": seen / max(progress.seconds, 1e-9),
            **valid,
            "skipped_images": len(state.skipped),
        }
        state.end_epoch(row, args.early_stopping_metric, parts.model)
        save()
        if writer is not None:
            print(format_line(row, epoch + 1), flush=True)
            for name, v in row.items():
                writer.add_scalar(name.replace("_", "/", 1), v, epoch + 1)
            writer.flush()
        fired = rules.evaluate() if rules is not None else None
        if distributed.any_rank(fired is not None, ctx):
            if fired is not None:
                rules.stop(fired, epoch + 1, checkpoint_dir)
            break
        if args.early_stopping_patience and state.bad_epochs >= args.early_stopping_patience:
            log.info(
                "early stopping: %s has not improved for %d epochs (best %.4f at epoch %d)",
                args.early_stopping_metric,
                state.bad_epochs,
                state.best["value"],
                state.best["epoch"],
            )
            break
    if writer is not None:
        writer.close()


def final_pass(
    loaders,
    state: TrainingState,
    metric: str,
    target_sensitivity: float | None,
    *,
    precision: Precision,
    inputs: DeviceInput,
    ctx: distributed.Context,
    hook,
    loss_fn: nn.Module,
):
    """The best weights on ``test`` (``valid`` without one): the final metrics, that split's name, logits and
    targets, and the temperature (and operating point) fitted on ``valid``."""
    final = dict(state.history[-1]) if state.history else {}
    final.update({"best_epoch": state.best["epoch"], f"best_{metric}": state.best["value"]})
    split, loader = ("test", loaders.test) if loaders.test is not None else ("valid", loaders.valid)
    set_mode(
        hook, "PREDICT"
    )  # recorded for Debugger, but not a validation pass: the rules' EVAL curves stay validation's
    metrics, logits, targets, bad = evaluate(loaders.eval_forward, loader, precision, inputs, ctx, split, hook, loss_fn)
    state.skipped.update(f"{split}:{p}" for p in bad)
    final.update(metrics, skipped_images=len(state.skipped))
    valid = (
        (logits, targets)
        if split == "valid"
        else evaluate(loaders.eval_forward, loaders.valid, precision, inputs, ctx, "valid", None, loss_fn)[1:3]
    )
    calibration = calibrate(valid, (logits, targets), split, target_sensitivity)
    final.update(calibration.metrics())
    return final, split, logits, targets, calibration


def run(args: argparse.Namespace) -> dict:
    """Train, evaluate and export; returns the final metrics. Raises TrainingError / Interrupted."""
    ctx = distributed.setup()
    configure_logging(ctx.is_main)
    seed_everything(args.seed, args.deterministic)
    pretrained = resolve_pretrained(args.pretrained)
    rule_names, stop_on = rule_settings(args, pretrained != "none")
    splits = load_splits(
        Path(args.train), Path(args.valid), Path(args.test), args.valid_fraction, args.test_fraction, args.seed
    )
    log.info(
        "data: %s layout, %d classes, %d train / %d valid / %s test images",
        splits.layout,
        len(splits.classes),
        len(splits.train),
        len(splits.valid),
        len(splits.test) if splits.test else "no",
    )
    net = build_network(args.model, len(splits.classes), pretrained)
    preprocess = Preprocess(
        resize=args.resize_size or min(round(args.image_size / 0.875), MAX_SIDE),
        crop=args.image_size,
        mean=net.mean,
        std=net.std,
        interpolation=net.interpolation,
        decode=args.decode,
    )
    head_params, backbone_params = set_policy(net, args.finetune, args.unfreeze_stages)
    model = net.model.to(ctx.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    precision = resolve_precision(args.amp, ctx.device)
    log.info(
        "model: %s, %s, %d trainable of %d parameters, %s on %s, %d process(es)",
        args.model,
        args.finetune,
        sum(p.numel() for p in head_params + backbone_params),
        sum(p.numel() for p in model.parameters()),
        precision.name,
        ctx.device,
        ctx.world_size,
    )
    loss_weight = (
        class_loss_weights(splits.train.labels, len(splits.classes)).to(ctx.device)
        if args.imbalance == "weighted-loss"
        else None
    )
    loss_fn = nn.CrossEntropyLoss(weight=loss_weight, label_smoothing=args.label_smoothing)
    inputs = DeviceInput(ctx.device, args.channels_last, preprocess.mean, preprocess.std)
    loaders = build_loaders(splits, net, model, preprocess, precision, inputs, args, ctx)
    hook, rules = attach_rules(
        args, rule_names, stop_on, loaders.module, loss_fn, precision, ctx
    )  # before the first step (torch.compile is lazy)

    optimizer = build_optimizer(args, head_params, backbone_params, ctx.device)
    steps_per_epoch = len(loaders.train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, group_schedules(optimizer, steps_per_epoch, args))
    parts = Trainables(
        net.model, optimizer, scheduler, torch.amp.GradScaler(ctx.device.type, enabled=precision.dtype == torch.float16)
    )
    resumed = TrainingState.restore(Path(args.checkpoint_dir), parts)
    state = resumed or TrainingState()
    state.skipped.update(loaders.skipped)
    if state.epoch >= args.epochs:
        log.info(
            "the checkpoint has finished all %d epochs: evaluating and exporting its best weights again", args.epochs
        )

    out = Path(args.output_data_dir)
    profiling = ctx.is_main and args.profiler_interval > 0
    if profiling:
        if resumed is None:
            shutil.rmtree(out / "profiler", ignore_errors=True)
        workers = loader_settings(args.workers, ctx.local_world_size)[0]
        write_run_info(
            out / "profiler", ctx.device, workers, core_share(ctx.local_world_size), args.batch_size, args.model
        )
    timer = StepTimer(out / "profiler" / "steps.jsonl" if profiling else None, ctx.device)
    with SystemSampler(out / "profiler" / "system.jsonl", args.profiler_interval) if profiling else nullcontext():
        fit(
            args,
            ctx,
            loaders,
            parts,
            state,
            precision=precision,
            inputs=inputs,
            loss_fn=loss_fn,
            hook=hook,
            rules=rules,
            timer=timer,
        )
        state.load_best(net.model, args.early_stopping_metric)
        model.eval()
        target_sensitivity = args.target_sensitivity if len(splits.classes) == 2 else None
        final, split, logits, targets, calibration = final_pass(
            loaders,
            state,
            args.early_stopping_metric,
            target_sensitivity,
            precision=precision,
            inputs=inputs,
            ctx=ctx,
            hook=hook,
            loss_fn=loss_fn,
        )
        if hook is not None:
            hook.close()
    distributed.teardown(ctx)
    if not ctx.is_main:
        return final
    shown = {k: v for k, v in final.items() if k.startswith("test_") or k == "temperature"}
    print(format_line(shown | {"skipped_images": len(state.skipped)}), flush=True)
    run_outputs.write_reports(
        out, split, splits.classes, softmax(logits), targets, args.model, final, state.history, calibration
    )
    run_outputs.export(Path(args.model_dir), net.model, args.model, splits, preprocess, final, vars(args), calibration)
    run_outputs.quantize(Path(args.model_dir), splits, preprocess, args.quantize)
    if rules is not None:
        rules.evaluate(final=True)
        rules.write(out)
        if rules.tensors == sagemaker_env.rule_tensors_dir():
            shutil.rmtree(rules.tensors, ignore_errors=True)  # judged: GBs of gradients need not stay on the volume
    if profiling:
        run_outputs.write_profiling_report(out)
    return final


def run_and_report(args: argparse.Namespace) -> int:
    """Run; on failure write the reason to /opt/ml/output/failure and return a non-zero exit code."""
    try:
        run(args)
        return 0
    except TrainingError as exc:
        reason, code = reason_of(exc), 1
    except Interrupted as exc:
        reason, code = str(exc), 143
    except torch.OutOfMemoryError as exc:
        reason = (
            f"CUDA ran out of memory with --batch-size {args.batch_size} ({str(exc).splitlines()[0]}). Lower "
            "--batch-size, "
            "use --amp bf16, --finetune head or last-k, or a GPU with more memory."
        )
        code = 1
    except Exception as exc:  # anything else is our bug: keep the traceback in the log, a summary for SageMaker
        traceback.print_exc()
        reason, code = (
            f"Unexpected error {type(exc).__name__}: {exc}. The traceback is in the job's log; please report it.",
            1,
        )
    write_failure(reason)
    logging.getLogger("train").error("training failed: %s", reason)
    return code
