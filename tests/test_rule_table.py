"""One table of rule parameters (``byoc_contract.rules``): the in-job rules implement exactly it, AWS's own profiler
rule configurations (``smdebug-rulesconfig``) have the same defaults, and docs/debugging.md shows each of them."""

import re

import pytest
import smdebug_rulesconfig
from conftest import REPO

from byoc_contract.rules import PROFILER_RULES, TENSOR_RULES
from train.debug import profiler_rules, tensor_rules

DOC = (REPO / "docs" / "debugging.md").read_text()


def same(doc: str, value: object) -> bool:
    """A default as the docs write it (``1e-7``, ``10.0``, ``True``, ``.*labels``) against the table's value."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return doc == str(value)
    return float(doc) == value


def doc_parameters(rule: str) -> str:
    """The 'parameters (defaults)' cell of the rule's row in docs/debugging.md."""
    rows = [line for line in DOC.splitlines() if line.startswith(f"| {rule} |")]
    assert len(rows) == 1, f"docs/debugging.md has {len(rows)} rows for {rule}"
    return rows[0].split("|")[2]


def test_the_in_job_rules_are_the_table():
    assert set(tensor_rules.RULES) == set(TENSOR_RULES)
    assert set(profiler_rules.RULES) == set(PROFILER_RULES)


@pytest.mark.parametrize("name", sorted(set(PROFILER_RULES) & set(dir(smdebug_rulesconfig))))
def test_profiler_defaults_are_aws_own(name):
    aws = getattr(smdebug_rulesconfig, name)().rule_parameters
    aws = {k: v for k, v in aws.items() if k not in ("rule_to_invoke", "scan_interval_us")}
    spec = PROFILER_RULES[name]
    assert {k: v for k, v in spec.parameters.items() if k not in spec.ours} == aws


@pytest.mark.parametrize("name", [*TENSOR_RULES, *PROFILER_RULES])
def test_docs_show_every_parameter_and_default(name):
    cell = doc_parameters(name)
    spec = {**TENSOR_RULES, **PROFILER_RULES}[name]
    written = dict(re.findall(r"`(\w+)=([^`]+)`", cell))
    for key, value in spec.parameters.items():
        if value is None:
            assert f"`{key}`" in cell, f"docs/debugging.md: {name} lacks `{key}`"
        else:
            assert key in written and same(written[key], value), f"docs/debugging.md: {name}.{key} is not {value}"
    for key in re.findall(r"`(\w+)[=`]", cell):
        assert key in spec.parameters or key == "relu_input", f"docs/debugging.md names {name}.{key}, which it lacks"
