"""Analysis: the comparison report, a pure function of run directories.

Reading a run directory is ``core.rundir``'s job (its layout, manifest, record table and generic
readers); this package turns what was read into figures, comparisons and the report.

Public surface:
    analyse(paths, Options()) -> Result read, join, compute, combine, compare (build)
    write_report(result, out_dir)       report.html, report.md, tables/, summary.json (report)
    summary_text(result) -> str         a one-screen terminal summary (report)
    AnalysisError                       input that cannot be used (the CLI exits 2)
The command line: ``python -m analysis`` / ``llm-report`` (analysis.__main__).
"""

from __future__ import annotations

from .build import Options, Result, analyse
from .errors import AnalysisError, ReportWarning
from .report import summary_text, write_report

__all__ = ["AnalysisError", "ReportWarning", "analyse", "Options", "Result", "write_report",
           "summary_text"]
