"""Rule verdicts, as SageMaker reports them (NoIssuesFound / IssuesFound / Error), printed as a table."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from byoc_contract.rules import ERROR, ISSUES, verdict_table


@dataclass(frozen=True)
class Verdict:
    rule: str
    status: str
    step: int | None = None
    evidence: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def table(verdicts: list[Verdict]) -> str:
    """A fixed-width table: rule, status, step, evidence."""
    return verdict_table([v.as_dict() for v in verdicts])


def exit_code(verdicts: list[Verdict]) -> int:
    """0: no issues; 1: a rule found issues; 2: a rule could not be evaluated."""
    if any(v.status == ERROR for v in verdicts):
        return 2
    return 1 if any(v.status == ISSUES for v in verdicts) else 0
