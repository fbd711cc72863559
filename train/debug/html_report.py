"""The profiling report: one self-contained HTML file (figures inlined) plus the PNG figures beside it.

Written to the trainer's output data folder (``/opt/ml/output/data`` on SageMaker, so it reaches S3 with
the job's ``output.tar.gz``): ``profiler-report.html`` and ``profiler-report/*.png``.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from byoc_contract.rules import ISSUES
from train.debug import plots
from train.debug.profiler_rules import COMPUTE, RULES, evaluate, load_profile
from train.debug.verdicts import Verdict

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1040px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
.IssuesFound { color: #b00020; font-weight: bold; } .NoIssuesFound { color: #1b5e20; } img { max-width: 100%; }
"""


def _summary(profile) -> list[tuple[str, str]]:
    seconds = profile.step_seconds()
    rows = [
        ("device", profile.run["device"]),
        ("model", profile.run["model"]),
        ("batch size", str(profile.run["batch_size"])),
        ("data loader workers / cores", f"{profile.run['workers']} / {profile.run['cores']}"),
        ("training steps", str(len(seconds))),
    ]
    if len(seconds):
        p50, p90, p99 = np.percentile(seconds * 1000, [50, 90, 99])
        rows.append(("step time p50 / p90 / p99", f"{p50:.1f} / {p90:.1f} / {p99:.1f} ms"))
        total = seconds.sum()
        shares = ", ".join(
            f"{phase} {100 * sum(s.get(phase, 0.0) for s in profile.steps) / total:.0f}%"
            for phase in ("data", *COMPUTE)
        )
        rows.append(("share of step time", shares))
    if profile.samples:
        rows.append(
            (
                "CPU utilisation mean / p95",
                f"{np.mean([s['cpu'] for s in profile.samples]):.0f}% / "
                f"{np.percentile([s['cpu'] for s in profile.samples], 95):.0f}%",
            )
        )
    return rows


def _calibration_rows(calibration: dict | None) -> list[tuple[str, str]]:
    if not calibration:
        return []
    split, bins = calibration["evaluated_on"], calibration["bins"]
    rows = [
        ("temperature (fitted on valid)", f"{calibration['temperature']:.3f}"),
        (f"{split} NLL before / after", f"{calibration['nll_before']:.4f} / {calibration['nll_after']:.4f}"),
        (
            f"{split} ECE ({bins} bins) before / after",
            f"{calibration['ece_before']:.4f} / {calibration['ece_after']:.4f}",
        ),
    ]
    point = calibration.get("operating_point")
    if point:
        rows.append(
            (
                "operating point (valid)",
                f"threshold {point['threshold']:.4f} for sensitivity >= {point['target_sensitivity']:g}: sensitivity "
                f"{point['sensitivity']:.3f}",
            )
        )
    return rows


def _image(path: Path, title: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<h2>{html.escape(title)}</h2>\n<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'


def render(output: Path, params: dict[str, dict[str, object]]) -> tuple[Path, list[Verdict]]:
    """Evaluate the profiler rules on ``output/profiler`` and write the report; returns (report path, verdicts)."""
    profile = load_profile(output / "profiler")
    verdicts = evaluate(profile, params)
    figures = output / "profiler-report"
    figures.mkdir(parents=True, exist_ok=True)
    metrics = json.loads((output / "metrics.json").read_text()) if (output / "metrics.json").is_file() else {}
    history, calibration = metrics.get("history", []), metrics.get("calibration")
    images = []
    if history:
        images.append((plots.training_curves(history, figures / "training_curves.png"), "Loss and accuracy"))
    if calibration:
        title = f"Reliability on {calibration['evaluated_on']}"
        images.append(
            (
                plots.reliability_diagram(calibration, figures / "reliability_diagram.png", title),
                f"{title}, before and after temperature scaling",
            )
        )
    images += [
        (plots.utilisation(profile, figures / "system_utilisation.png"), "System utilisation"),
        (plots.step_histogram(profile, figures / "step_time_histogram.png"), "Step time histogram"),
        (plots.time_breakdown(profile, figures / "time_breakdown.png"), "Where the time goes"),
    ]
    issues = [v for v in verdicts if v.status == ISSUES]
    headline = "; ".join(f"{v.rule}: {v.evidence}" for v in issues) if issues else "no profiler rule found an issue"
    rows = "\n".join(
        f'<tr><td>{v.rule}</td><td class="{v.status}">{v.status}</td>'
        f"<td>{html.escape(RULES[v.rule].SUMMARY)}</td><td>{html.escape(v.evidence)}</td></tr>"
        for v in verdicts
    )
    summary = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in _summary(profile) + _calibration_rows(calibration)
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Profiling report</title><style>{STYLE}</style></head>
<body>
<h1>Profiling report</h1>
<p id="headline">{html.escape(headline)}</p>
<table id="summary">{summary}</table>
<h2>Profiler rules</h2>
<table id="rules"><tr><th>rule</th><th>status</th><th>checks</th><th>evidence</th></tr>
{rows}
</table>
{chr(10).join(_image(path, title) for path, title in images)}
</body></html>
"""
    report = output / "profiler-report.html"
    report.write_text(page)
    return report, verdicts
