"""``python -m train.debug``: evaluate Debugger rules on saved tensors, or render the profiling report.

python -m train.debug rules <tensor dir> [--rules all|Name,...] [--param Rule.name=value ...] [--json FILE]
python -m train.debug report <output data dir> [--param Rule.name=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from train.debug.verdicts import exit_code, table


def _params(items: list[str]) -> dict[str, dict[str, str]]:
    """``Rule.name=value`` items -> {Rule: {name: value}}."""
    params: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        rule, dot, name = key.partition(".")
        if not sep or not dot:
            raise ValueError(f"--param {item}: write it as Rule.parameter=value, e.g. Overfit.ratio_threshold=0.2")
        params.setdefault(rule, {})[name] = value
    return params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.debug", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rules = commands.add_parser(
        "rules", help="evaluate the built-in Debugger rules on tensors saved by the smdebug hook"
    )
    rules.add_argument(
        "tensors", type=Path, help="the hook's output folder (--debugger-out, or the job's S3 tensors downloaded)"
    )
    rules.add_argument("--rules", default="all", help="comma-separated rule names, or all")
    rules.add_argument(
        "--param", action="append", default=[], metavar="RULE.NAME=VALUE", help="override a rule parameter (repeatable)"
    )
    rules.add_argument("--json", type=Path, default=None, help="also write the verdicts here as JSON")
    report = commands.add_parser("report", help="render the profiling report from a run's output data folder")
    report.add_argument("output", type=Path, help="the trainer's --output-data-dir (holds profiler/ and metrics.json)")
    report.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="RULE.NAME=VALUE",
        help="override a profiler rule parameter (repeatable)",
    )
    return parser


def run_rules(args: argparse.Namespace) -> int:
    from byoc_contract.rules import rule_names
    from train.debug.tensor_check import evaluate, open_trial

    verdicts = evaluate(open_trial(args.tensors), rule_names(args.rules), _params(args.param))
    print(table(verdicts))
    if args.json:
        args.json.write_text(json.dumps([v.as_dict() for v in verdicts], indent=2))
    return exit_code(verdicts)


def run_report(args: argparse.Namespace) -> int:
    from train.debug.html_report import render

    path, verdicts = render(args.output, _params(args.param))
    print(table(verdicts))
    print(f"report: {path}")
    return exit_code(verdicts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_rules(args) if args.command == "rules" else run_report(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
