"""The report: sections rendered to HTML (interactive plots, inline) and Markdown (PNG plots),
tables to CSV/JSON.

    write_report(result, out_dir) -> {"html": ..., "md": ..., "summary": ..., "tables": [...]}
    summary_text(result) -> str    (one screen for the terminal)

The parts: model.py (Section, Table, formatters, lookups), tables.py (each table, rows and
columns from analysis.catalogue), sections.py (each section, in order), figures.py (each plot's
data, once, and its PNG), interactive.py (the same data drawn with plotly for report.html),
html.py (with its CSS), markdown.py, summary.py (summary.json and the terminal summary). Every
text file is written through ``_write``, which scrubs it (core.secrets); the inlined plotly.js
passes through it unchanged (a test checks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core import secrets

from .html import render_html
from .markdown import render_markdown
from .model import Section, Table, figure_file, records_json
from .sections import build_sections
from .summary import summary_dict, summary_text

__all__ = ["write_report", "summary_text", "summary_dict", "build_sections", "render_html",
           "render_markdown"]


def _all_tables(sections: list[Section]) -> list[Table]:
    return [p for s in sections for k, p in s.blocks if k == "table"]


def _write(path: Path, text: str) -> None:
    """Every report file is written here, scrubbed of anything shaped like a credential
    (core.secrets: the second line of defence behind the config's refusal)."""
    path.write_text(secrets.scrub(text), encoding="utf-8")


def write_report(result, out_dir: Path, progress=None) -> dict[str, Any]:
    """Write report.html, report.md, summary.json, tables/ and figures/ into out_dir."""
    from .figures import all_figures
    out_dir = Path(out_dir)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    if progress:
        progress("drawing figures")
    figures = all_figures(result)
    sections = build_sections(result, figures)
    if progress:
        progress(f"writing {out_dir}")
    written = []
    extra = [Table("combined", "", result.combined)]
    if len(result.down_windows):
        extra.append(Table("endpoint_down", "", result.down_windows))
    for t in [t for t in _all_tables(sections) if t.write] + extra:
        raw = t.raw if t.raw is not None else t.display
        csv_path = out_dir / "tables" / f"{t.name}.csv"
        _write(csv_path, raw.to_csv(index=False))
        _write(out_dir / "tables" / f"{t.name}.json",
               json.dumps(records_json(raw), indent=1, allow_nan=False))
        written.append(csv_path)
    (out_dir / "figures").mkdir(exist_ok=True)
    for fid, _, png, _ in figures:     # the static figures of report.md
        (out_dir / figure_file(fid)).write_bytes(png)
    html_path = out_dir / "report.html"
    _write(html_path, render_html(result, sections))
    md_path = out_dir / "report.md"
    _write(md_path, render_markdown(result, sections))
    summary_path = out_dir / "summary.json"
    _write(summary_path, json.dumps(summary_dict(result), indent=1, allow_nan=False))
    return {"html": html_path, "md": md_path, "summary": summary_path, "tables": written,
            "figures": [f[0] for f in figures]}
