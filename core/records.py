"""The per-request record, as the load generator fills it and the docs print it.

The record's columns (name, type, default, definition) and the failure categories are declared
once, in ``core.rundir.records`` (the run directory's contract); this module re-exports them for
the code that builds records, and holds the per-request helpers (``gap_summary``) and the
Markdown tables (``python -m core.records``). Times are in seconds (base units); wall-clock
instants are Unix seconds. A value that was not reached (no first token, no usage) is NaN, never
0 or -1.
"""

from __future__ import annotations

import math

from core.rundir.records import (ERROR_CATEGORIES, FIELD_DEFINITIONS, NAN, RECORD_FIELDS,
                                 ErrorCategory, RequestRecord)

__all__ = ["ERROR_CATEGORIES", "FIELD_DEFINITIONS", "NAN", "RECORD_FIELDS", "ErrorCategory",
           "RequestRecord", "gap_summary", "markdown_tables"]


def gap_summary(gaps: list[float]) -> tuple[float, float, float, float]:
    """Mean, p50, p99 and max of inter-chunk gaps (nearest-rank percentiles); NaNs when empty."""
    if not gaps:
        return NAN, NAN, NAN, NAN
    ordered = sorted(gaps)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * n) - 1)]

    return sum(ordered) / n, rank(0.50), rank(0.99), ordered[-1]


def markdown_tables() -> str:
    """The record fields and failure categories as Markdown (pasted into the README)."""
    lines = ["| field | definition |", "| --- | --- |"]
    lines += [f"| `{name}` | {FIELD_DEFINITIONS[name]} |" for name in RECORD_FIELDS]
    lines += ["", "| category | meaning |", "| --- | --- |"]
    lines += [f"| `{name}` | {text} |" for name, text in ERROR_CATEGORIES.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_tables())
