"""Analysis: metric capture during runs, and the comparison report built from run directories.

Public surface:
    MetricsCapture, ScrapeTarget        scrape /metrics during a run into metrics.csv (capture)
    analyse(paths, Options()) -> Result read, join, compute, combine, compare (build)
    write_report(result, out_dir)       report.html, report.md, tables/, summary.json (report)
    summary_text(result) -> str         a one-screen terminal summary (report)
    AnalysisError                       input that cannot be used (the CLI exits 2)
The command line: ``python -m analysis`` / ``llm-report`` (analysis.__main__).

Heavy modules (pandas, matplotlib) load on first use, so that the Locust master can import
``analysis.capture`` cheaply.
"""

from __future__ import annotations

from typing import Any

from .capture import MetricsCapture, ScrapeTarget
from .errors import AnalysisError, ReportWarning

__all__ = ["MetricsCapture", "ScrapeTarget", "AnalysisError", "ReportWarning", "analyse",
           "Options", "Result", "write_report", "summary_text"]


def __getattr__(name: str) -> Any:
    if name in ("analyse", "Options", "Result"):
        from . import build
        return getattr(build, name)
    if name in ("write_report", "summary_text"):
        from . import report
        return getattr(report, name)
    raise AttributeError(name)
