"""Rule parameters: AWS's defaults, overridden by values that may arrive as strings (as SageMaker passes them)."""

from __future__ import annotations


def _coerce(value, default):
    if value is None or default is None or not isinstance(value, str):
        return value
    if isinstance(default, bool):
        if value.lower() not in ("true", "false"):
            raise ValueError(f"expected True or False, got '{value}'")
        return value.lower() == "true"
    return type(default)(value)


def typed(rule: str, defaults: dict[str, object], given: dict[str, object]) -> dict[str, object]:
    """``defaults`` updated with ``given``, each read as its default's type; unknown names are refused."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{rule} has no parameter {', '.join(unknown)}; it takes {', '.join(defaults) or 'none'}")
    params = {}
    for name, default in defaults.items():
        try:
            params[name] = _coerce(given.get(name, default), default)
        except ValueError as exc:
            raise ValueError(f"{rule}.{name}={given[name]!r}: {exc}") from exc
    return params
