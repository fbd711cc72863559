"""How a library's exception is quoted in a message for people: one line, bounded."""


def one_line(exc: BaseException, limit: int) -> str:
    """``Type: message`` of ``exc`` with its whitespace runs (a runtime's multi-line dump) as single spaces, cut to
    ``limit`` characters."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:limit]
