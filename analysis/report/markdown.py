"""The report as Markdown (report.md): every text escaped, figures as the PNGs in figures/
(written by write_report), each linked to its interactive version in report.html."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .model import Section, figure_file, report_title


def md_escape(text: Any) -> str:
    """Markdown cell/paragraph text: no raw HTML (& and < escaped), no table breaks."""
    t = str(text).replace("&", "&amp;").replace("<", "&lt;")
    return " ".join(t.replace("|", "\\|").split()) if "\n" in t or "\r" in t else t.replace("|", "\\|")


def md_table(df: pd.DataFrame) -> str:
    if df is None or not len(df.columns):
        return ""
    cols = [md_escape(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(md_escape(v) for v in row) + " |")
    return "\n".join(lines)


def render_markdown(result, sections: list[Section]) -> str:
    out = [f"# {md_escape(report_title(result))}", ""]
    for s in sections:
        out += [f"## {md_escape(s.title)}", ""]
        for kind, payload in s.blocks:
            if kind == "p":
                out += [md_escape(payload), ""]
            elif kind == "list":
                out += [f"- {md_escape(x)}" for x in payload] + [""]
            elif kind == "table":
                if payload.title and payload.title != s.title:
                    out += [f"### {md_escape(payload.title)}", ""]
                out += [md_table(payload.display), ""]
                if payload.note:
                    out += [f"_{md_escape(payload.note)}_", ""]
            elif kind == "figure":
                fid, caption, _, data = payload
                where = "interactive" if data is not None else "also"
                out += [f"![{md_escape(caption)}]({figure_file(fid)})", "",
                        f"_{md_escape(caption)} ({where} in [report.html]"
                        f"(report.html#fig-{md_escape(fid)}))_", ""]
            elif kind == "defs":
                out += [f"- **{md_escape(k)}**: {md_escape(v)}" for k, v in payload] + [""]
    return "\n".join(out).rstrip() + "\n"
