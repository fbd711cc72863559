"""SageMaker Debugger (smdebug) hook: from SageMaker's hook config, or from --debugger-out."""
from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from train import sagemaker_env

log = logging.getLogger(__name__)


def create_hook(out_dir: str | None, interval: int, collections: str, model: nn.Module, loss_fn: nn.Module):
    """A registered smdebug hook, or None when Debugger is not asked for."""
    config = sagemaker_env.debug_hook_config()
    if not config.is_file() and not out_dir:
        return None
    import smdebug.pytorch as smd

    if config.is_file():
        hook = smd.Hook.create_from_json_file(json_file_path=str(config))
        log.info("Debugger hook from %s, saving to %s", config, hook.out_dir)
    else:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        hook = smd.Hook(
            out_dir=out_dir,
            export_tensorboard=False,
            save_config=smd.SaveConfig(save_interval=interval),
            include_collections=[c.strip() for c in collections.split(",") if c.strip()],
        )
        log.info("Debugger hook saving %s every %d steps to %s", collections, interval, out_dir)
    hook.register_module(model)
    hook.register_loss(loss_fn)
    return hook


def set_mode(hook, mode: str) -> None:
    """TRAIN or EVAL, so rules see the two phases apart."""
    if hook is not None:
        import smdebug.pytorch as smd

        hook.set_mode(getattr(smd.modes, mode))
