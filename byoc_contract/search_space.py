"""The hyperparameter search space, read from the YAML file that both tuners take (SageMaker's and the local one).

lr: {type: continuous, min: 1e-4, max: 1e-1, scaling: Logarithmic}
batch-size: {type: integer, min: 16, max: 64}
optimizer: {type: categorical, values: [adamw, sgd]}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SCALINGS = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")


@dataclass(frozen=True)
class Range:
    name: str
    kind: str  # continuous | integer | categorical
    low: float | int | None = None
    high: float | int | None = None
    scaling: str = "Auto"
    values: tuple[str, ...] = ()


def load(path: str | None) -> list[Range]:
    """The checked ranges of the YAML file at ``path``; ValueError says what to fix."""
    if not path:
        raise ValueError(
            "no search space: pass --search-space FILE.yaml (e.g. lr: {type: continuous, min: 1e-4, max: 1e-1, "
            "scaling: Logarithmic})."
        )
    import yaml

    try:
        space = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read --search-space {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"--search-space {path} is not valid YAML: {exc}") from None
    if not isinstance(space, dict) or not space or not all(isinstance(v, dict) for v in space.values()):
        raise ValueError(
            f"--search-space {path} must map each hyperparameter to {{type: ..., min: ..., max: ...}} or {{type: "
            f"categorical, values: [...]}}."
        )
    return [_range(str(name), spec) for name, spec in space.items()]


def _range(name: str, spec: dict) -> Range:
    kind = str(spec.get("type", "categorical" if "values" in spec else "")).lower()
    where = f"search space {name!r}"
    if kind == "categorical":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: a categorical range needs a non-empty list under values.")
        return Range(name, kind, values=tuple(str(v) for v in values))
    if kind not in ("continuous", "integer"):
        raise ValueError(f"{where}: type must be continuous, integer or categorical (got {spec.get('type')!r}).")
    number = float if kind == "continuous" else int
    try:
        low, high = number(spec["min"]), number(spec["max"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: a {kind} range needs numeric min and max.") from None
    scaling = str(spec.get("scaling", "Auto"))
    if low >= high:
        raise ValueError(f"{where}: min ({low}) must be below max ({high}).")
    if scaling not in SCALINGS:
        raise ValueError(f"{where}: scaling must be one of {', '.join(SCALINGS)}.")
    if scaling == "Logarithmic" and low <= 0:
        raise ValueError(f"{where}: a Logarithmic range needs min > 0.")
    return Range(name, kind, low, high, scaling)
