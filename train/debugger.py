"""SageMaker Debugger (smdebug) hook: from SageMaker's hook config, or from --debugger-out.

Besides the collections asked for, the hook saves what the built-in rules read: ReLU inputs
(``relu_input``, PoorWeightInitialization), ``labels`` and ``predictions`` (ClassImbalance), and every
EVAL step of the losses, so a validation pass can be told apart from the training around it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from train import sagemaker_env

log = logging.getLogger(__name__)
os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")  # smdebug logs a line per registered tensor at INFO
DENSE_IN_EVAL = ("losses", "labels", "predictions")
REDUCED = "gradient_reductions"
EARLY_STEPS = 10  # PoorWeightInitialization judges the first 10 training steps: ReLU inputs are saved only there


def create_hook(
    out_dir: str | None,
    interval: int,
    collections: str,
    model: nn.Module,
    loss_fn: nn.Module,
    activations: bool = True,
    lean: bool = False,
):
    """A registered smdebug hook, or None when Debugger is not asked for.

    ``activations=False`` (under bf16/fp16 autocast, which smdebug cannot write) leaves out the ReLU inputs.
    ``lean`` (the in-job rules' own folder): gradients are saved whole only over the first steps, and after them as
    the mean and max of their absolute values (``gradient_reductions``), which is all the rules read then.
    """
    config = sagemaker_env.debug_hook_config()
    if not config.is_file() and not out_dir:
        return None
    import smdebug.pytorch as smd

    if config.is_file():
        hook = smd.Hook.create_from_json_file(json_file_path=str(config))
        log.info("Debugger hook from %s, saving to %s", config, hook.out_dir)
    else:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        wanted = [c.strip() for c in collections.split(",") if c.strip()]
        hook = smd.Hook(
            out_dir=out_dir,
            export_tensorboard=False,
            save_config=smd.SaveConfig(save_interval=interval),
            include_collections=wanted
            + [c for c in ("relu_input", "labels", "predictions") + (REDUCED,) * lean if c not in wanted],
        )
        if lean and "gradients" in wanted:
            reduce_gradients_after_early_steps(hook, interval)
        log.info("Debugger hook saving %s every %d steps to %s", collections, interval, out_dir)
    hook.register_module(model)
    hook.register_loss(loss_fn)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)] if activations else []
    if relus:
        relu = hook.get_collection("relu_input")
        for module in relus:
            relu.add_module_tensors(module, inputs=True, outputs=False)
        every = _train_interval(relu, interval)
        relu.save_config = smd.SaveConfig(
            mode_save_configs={
                smd.modes.TRAIN: smd.SaveConfigMode(save_interval=every, end_step=EARLY_STEPS),
                smd.modes.EVAL: smd.SaveConfigMode(save_interval=every, end_step=0),
            }
        )
    elif not activations:
        log.info(
            "ReLU inputs are not saved under reduced-precision autocast (smdebug writes float32 only); use --amp none "
            "to include them"
        )
    hook.get_collection("labels").include("^labels$")
    hook.get_collection("predictions").include("^predictions$")
    for name in DENSE_IN_EVAL:
        collection = hook.get_collection(name)
        collection.save_config = smd.SaveConfig(
            mode_save_configs={
                smd.modes.TRAIN: smd.SaveConfigMode(save_interval=_train_interval(collection, interval)),
                smd.modes.EVAL: smd.SaveConfigMode(save_interval=1),
            }
        )
    return hook


def reduce_gradients_after_early_steps(hook, interval: int) -> None:
    """Whole gradients for the first EARLY_STEPS training steps; |mean| and |max| reductions of them at every save."""
    import smdebug.pytorch as smd

    hook.get_collection("gradients").save_config = smd.SaveConfig(
        mode_save_configs={smd.modes.TRAIN: smd.SaveConfigMode(save_interval=interval, end_step=EARLY_STEPS)}
    )
    reduced = hook.get_collection(REDUCED)
    reduced.include("^gradient/")
    reduced.reduction_config = smd.ReductionConfig(abs_reductions=["mean", "max"])
    reduced.save_config = smd.SaveConfig(
        mode_save_configs={smd.modes.TRAIN: smd.SaveConfigMode(save_interval=interval)}
    )


def _train_interval(collection, default: int) -> int:
    """The collection's TRAIN save interval (from SageMaker's hook config), else ``default``."""
    import smdebug.pytorch as smd

    return collection.save_config.get_save_config(smd.modes.TRAIN).save_interval if collection.save_config else default


def record(hook, labels: torch.Tensor, logits: torch.Tensor) -> None:
    """Save this step's labels and predicted classes (for ClassImbalance)."""
    if hook is not None:
        hook.save_tensor("labels", labels.detach(), "labels")
        hook.save_tensor("predictions", logits.detach().argmax(dim=1), "predictions")


def set_mode(hook, mode: str) -> None:
    """TRAIN, EVAL (validation) or PREDICT (the final test pass), so rules see the phases apart."""
    if hook is not None:
        import smdebug.pytorch as smd

        hook.set_mode(getattr(smd.modes, mode))
