"""Command-line flags of the trainer; SageMaker hyperparameters arrive as these flags (``--name value``)."""

from __future__ import annotations

import argparse
import sys

from byoc_contract.metric_log import METRIC_NAMES
from byoc_contract.model_json import MAX_SIDE
from byoc_contract.rules import DEFAULT_RULES, RULE_NAMES
from byoc_images import DECODES
from train import sagemaker_env
from train.models import POLICIES
from train.transforms import AUGMENTATIONS


def str2bool(value: str | bool) -> bool:
    """SageMaker passes booleans as strings: true/false, 1/0, yes/no."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "1", "yes", "y", "on"):
        return True
    if value.lower() in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def workers_count(value: str) -> int | None:
    """``auto`` (None: chosen from the cores) or a number >= 0."""
    if value == "auto":
        return None
    if value.isdigit():
        return int(value)
    raise argparse.ArgumentTypeError(f"expected 'auto' or a number >= 0, got '{value}'")


class Parser(argparse.ArgumentParser):
    """Bad flags raise TrainingError (reported to SageMaker) instead of exiting quietly."""

    def error(self, message: str):
        from train.errors import TrainingError

        raise TrainingError(f"Bad hyperparameter or flag: {message}. `python -m train --help` lists every flag.")


def _fraction(raw: str) -> float:
    """A number strictly between 0 and 1, for argparse."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1 (exclusive)")
    return value


def _side(raw: str) -> int:
    """A whole number of px from 1 to the largest side a model description may hold, for argparse."""
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number of px") from None
    if not 1 <= value <= MAX_SIDE:
        raise argparse.ArgumentTypeError(f"{value} px must be from 1 to {MAX_SIDE}")
    return value


def _flag(group, name: str, help: str) -> None:
    """A true/false flag on an argument group (SageMaker sends ``--name true``; ``--name`` alone also means true)."""
    group.add_argument(name, type=str2bool, nargs="?", const=True, default=False, help=help + " (true/false)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m train",
        description="Fine-tune an image classifier under the SageMaker training contract. Defaults come from "
        "the SM_* environment; hyperparameters may use - or _ in their names.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_flags(parser.add_argument_group("data"))
    add_model_flags(parser.add_argument_group("model"))
    add_optimisation_flags(parser.add_argument_group("optimisation"))
    add_output_flags(parser.add_argument_group("outputs"))
    return parser


def add_data_flags(data) -> None:
    """Channels, splits, loading and the input size."""
    data.add_argument(
        "--train",
        type=str,
        default=str(sagemaker_env.channel_dir("train")),
        help="train channel: class folders, HDF5+CSV, or CIFAR batches",
    )
    data.add_argument(
        "--valid",
        type=str,
        default=str(sagemaker_env.channel_dir("valid")),
        help="valid channel; split from train when missing",
    )
    data.add_argument(
        "--test",
        type=str,
        default=str(sagemaker_env.channel_dir("test")),
        help="test channel; evaluated once at the end",
    )
    data.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="share of train held out for validation when there is no valid channel",
    )
    data.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="share held out for test (HDF5+CSV layout without a test channel)",
    )
    _flag(data, "--strict-data", "fail on the first unreadable image instead of skipping and counting it")
    data.add_argument(
        "--workers",
        type=workers_count,
        default="auto",
        help="DataLoader worker processes per rank; auto: the rank's cores but one",
    )
    data.add_argument(
        "--decoded-cache",
        type=str,
        default="auto",
        help="decode each image once into a uint8 memory-mapped cache at --resize-size, reused by later epochs "
        "and runs: "
        f"'auto' ({sagemaker_env.decoded_cache_dir()}), 'off', or a folder (share one between tuning trials)",
    )
    data.add_argument("--image-size", type=_side, default=224, help="crop size fed to the network")
    data.add_argument(
        "--resize-size",
        type=_side,
        default=None,
        help="shorter side before the center crop (default: image-size / 0.875)",
    )
    data.add_argument("--augment", choices=AUGMENTATIONS, default="light", help="training augmentation preset")
    data.add_argument(
        "--decode",
        choices=DECODES,
        default="scaled",
        help="scaled: decode large JPEGs at the DCT scale the resize needs (other formats reduced first), as the "
        "server does; "
        "exact: every pixel, bit-identical with artifacts trained before scaled decoding (model.json records "
        "the choice)",
    )


def add_model_flags(model) -> None:
    """The network, its weights and what is fine-tuned."""
    model.add_argument("--model", type=str, default="resnet50", help="torchvision model name, or timm/<name>")
    model.add_argument(
        "--pretrained",
        type=str,
        default="auto",
        help="weights: 'auto' (the file in the 'pretrained' channel, else imagenet), 'imagenet' (download), 'none', "
        "or a file path",
    )
    model.add_argument(
        "--finetune",
        choices=POLICIES,
        default="full",
        help="train the head only, the last K stages + head, or everything",
    )
    model.add_argument("--unfreeze-stages", type=int, default=1, help="K for --finetune last-k")
    model.add_argument(
        "--head-epochs",
        type=float,
        default=0.0,
        help="with last-k or full: train the head alone for this many epochs first",
    )
    model.add_argument(
        "--feature-cache",
        choices=("auto", "off"),
        default="auto",
        help="cache frozen-backbone features (head-only with --augment none)",
    )


def add_optimisation_flags(optim) -> None:
    """Optimiser, schedule, loss, precision and stopping."""
    optim.add_argument("--epochs", type=int, default=10, help="passes over the train channel, --head-epochs included")
    optim.add_argument("--batch-size", type=int, default=32, help="per-device batch size")
    optim.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw", help="weight update rule")
    optim.add_argument("--lr", type=float, default=1e-3, help="learning rate of the head")
    optim.add_argument(
        "--backbone-lr", type=float, default=None, help="learning rate of unfrozen backbone stages (default: lr / 10)"
    )
    optim.add_argument("--weight-decay", type=float, default=1e-4, help="not applied to biases and norm layers")
    optim.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    optim.add_argument(
        "--scheduler",
        choices=("cosine", "step", "constant"),
        default="cosine",
        help="learning-rate schedule after the warm-up",
    )
    optim.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up length (fractions allowed)")
    optim.add_argument("--step-size", type=int, default=3, help="epochs between decays for --scheduler step")
    optim.add_argument("--gamma", type=float, default=0.1, help="decay factor for --scheduler step")
    optim.add_argument(
        "--label-smoothing", type=float, default=0.0, help="share of the target spread over the other classes (0: off)"
    )
    optim.add_argument(
        "--imbalance",
        choices=("none", "weighted-loss", "balanced-sampler"),
        default="none",
        help="handling of imbalanced classes",
    )
    optim.add_argument(
        "--amp",
        choices=("auto", "none", "bf16", "fp16"),
        default="auto",
        help="autocast: auto = bf16 (fp16 on old GPUs) on CUDA, bf16 on CPUs with AVX512-BF16/AMX",
    )
    _flag(optim, "--channels-last", "use the channels_last memory format")
    _flag(optim, "--compile", "torch.compile the model")
    optim.add_argument("--clip-grad-norm", type=float, default=0.0, help="max gradient norm (0: off)")
    optim.add_argument(
        "--early-stopping-patience", type=int, default=0, help="epochs without improvement before stopping (0: off)"
    )
    optim.add_argument(
        "--early-stopping-metric",
        choices=[m for m in METRIC_NAMES if m.startswith("valid_")],
        default="valid_loss",
        help="metric to watch (loss: lower is better)",
    )
    optim.add_argument(
        "--seed",
        type=int,
        default=42,
        help="seed of the split, the shuffling, the augmentation and the initial weights",
    )
    _flag(optim, "--deterministic", "deterministic algorithms (slower)")


def add_output_flags(out) -> None:
    """Where results go, int8 export, operating point, in-job rules and profiling."""
    out.add_argument("--model-dir", type=str, default=str(sagemaker_env.model_dir()), help="where the artifact goes")
    out.add_argument(
        "--output-data-dir", type=str, default=str(sagemaker_env.output_data_dir()), help="reports and metrics"
    )
    out.add_argument(
        "--checkpoint-dir",
        type=str,
        default=str(sagemaker_env.checkpoint_dir()),
        help="checkpoints, resumed from on start",
    )
    out.add_argument(
        "--tensorboard-dir",
        type=str,
        default=str(sagemaker_env.tensorboard_dir()),
        help="TensorBoard event files (SageMaker uploads them)",
    )
    out.add_argument(
        "--quantize",
        choices=("auto", "off", "force"),
        default="auto",
        help="int8 serving model (NNCF, OpenVINO IR) next to model.onnx: auto = ship it when, served with the "
        "near-tie fp32 re-check, it "
        "agrees with fp32 on >= 99%% of the test images and loses <= 0.5 accuracy points (a warning when it re-checks "
        "over 10%%); force = ship one even when none passes (the fastest tried); off = none",
    )
    out.add_argument(
        "--target-sensitivity",
        type=_fraction,
        default=0.95,
        help="two classes (e.g. ISIC): the operating point, the threshold on class 1's calibrated probability that "
        "reaches this sensitivity on valid",
    )
    out.add_argument(
        "--debugger-out",
        type=str,
        default=None,
        help="save the smdebug hook's tensors here too (the in-job rules read them from here then)",
    )
    out.add_argument(
        "--debugger-interval",
        type=int,
        default=10,
        help="save tensors every N steps (for the in-job rules and --debugger-out)",
    )
    out.add_argument(
        "--profiler-interval",
        type=float,
        default=0.5,
        help="seconds between system samples for the profiling report (0: no profiling)",
    )
    out.add_argument(
        "--debugger-rules",
        type=str,
        default=",".join(DEFAULT_RULES),
        help=f"Debugger rules judged inside the job at each epoch end (comma list of {', '.join(RULE_NAMES)}; "
        "all; none)",
    )
    out.add_argument(
        "--stop-on-rule",
        type=str,
        nargs="*",
        default=[],
        metavar="RULE",
        help="stop at the epoch end when one of these rules finds issues (comma or space list)",
    )
    out.add_argument(
        "--debugger-collections",
        type=str,
        default="losses,weights,gradients,biases",
        help="smdebug collections (with --debugger-out)",
    )


def normalize_argv(argv: list[str]) -> list[str]:
    """``--batch_size 8`` -> ``--batch-size 8``: SageMaker hyperparameter names often use underscores."""
    return [a.replace("_", "-") if a.startswith("--") and "=" not in a else _normalize_assignment(a) for a in argv]


def _normalize_assignment(arg: str) -> str:
    if arg.startswith("--") and "=" in arg:
        name, _, value = arg.partition("=")
        return f"{name.replace('_', '-')}={value}"
    return arg


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(normalize_argv(sys.argv[1:] if argv is None else argv))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m train``: run, report a failure to SageMaker, return the exit code."""
    from train.errors import TrainingError, write_failure
    from train.run import run_and_report

    try:
        args = parse_args(argv)
    except TrainingError as exc:
        write_failure(str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_and_report(args)
