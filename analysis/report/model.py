"""The report's model: sections of blocks (paragraphs, lists, tables, figures, definitions),
the cell formatters, and lookups into the Result that every part shares (the plots too).

Every string that came from a server, a config or a file is escaped when rendered (html.py,
markdown.py), so a model called ``<script>`` is shown, never run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..catalogue import METRICS

NA = "n/a"


@dataclass
class Table:
    name: str                       # file stem under tables/
    title: str
    display: pd.DataFrame           # strings, as shown
    raw: pd.DataFrame | None = None  # numbers, written to tables/<name>.csv/.json
    note: str = ""
    write: bool = True              # False: shown only (its numbers are in another table's file)


@dataclass
class Section:
    id: str
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)   # (kind, payload)

    def p(self, text: str) -> "Section":
        self.blocks.append(("p", text))
        return self

    def items(self, items: list[str]) -> "Section":
        self.blocks.append(("list", items))
        return self

    def table(self, t: Table) -> "Section":
        self.blocks.append(("table", t))
        return self

    def figure(self, fig_id: str, caption: str, png: bytes, data: Any = None) -> "Section":
        """A figure: its PNG, and its data (figures.FigureData) when report.html draws it
        interactively (None: the PNG only)."""
        self.blocks.append(("figure", (fig_id, caption, png, data)))
        return self

    def defs(self, pairs: list[tuple[str, str]]) -> "Section":
        self.blocks.append(("defs", pairs))
        return self


def figure_file(fig_id: str) -> str:
    """Where a figure's PNG is written, relative to the report directory (report.md shows it)."""
    return "figures/" + re.sub(r"[^A-Za-z0-9_.-]", "_", fig_id) + ".png"


def isnan(x: Any) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x))


def fmt(x: Any, decimals: int = 1) -> str:
    if isnan(x):
        return NA
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    return f"{float(x):,.{decimals}f}"


def fmt_ci(mean: float, lo: float, hi: float, decimals: int = 1) -> str:
    """'98.2 ± 3.1' (mean and 95% CI half-width over runs); just the mean with one run."""
    if isnan(mean):
        return NA
    if isnan(lo) or isnan(hi):
        return fmt(mean, decimals)
    return f"{fmt(mean, decimals)} ± {fmt((hi - lo) / 2, decimals)}"


def fmt_pct_change(x: float) -> str:
    return NA if isnan(x) else f"{x:+.1f}%"


def fmt_level(x: float) -> str:
    return NA if isnan(x) else f"{x:g}"


def json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) or math.isinf(obj) else float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def records_json(df: pd.DataFrame) -> list[dict]:
    return json_safe(df.astype(object).where(df.notna(), None).to_dict(orient="records"))


def has_metric(result, metric: str) -> bool:
    """True when some endpoint and level has a value of the metric."""
    c = result.combined
    return bool(((c["metric"] == metric) & c["mean"].notna()).any())


class Lookup:
    """Fast access to combined values: (endpoint, level, metric) -> row."""

    def __init__(self, result):
        self.result = result
        c = result.combined
        self.d = {(r.endpoint, float(r.level), r.metric): r for r in c.itertuples(index=False)}

    def get(self, ep, level, metric):
        return self.d.get((ep, float(level), metric))

    def cell(self, ep, level, metric) -> str:
        r = self.get(ep, level, metric)
        if r is None:
            return NA
        return fmt_ci(r.mean, r.ci_low, r.ci_high, METRICS[metric].decimals)

    def has(self, metric) -> bool:
        return any(k[2] == metric and not isnan(v.mean) for k, v in self.d.items())

    def raw(self, metrics: list[str]) -> pd.DataFrame:
        c = self.result.combined
        return c[c["metric"].isin(metrics)].reset_index(drop=True)


def ep_name(result, ep: str) -> str:
    model = result.models.get(ep)
    return f"{ep} ({model})" if model and model != ep else ep


def metric_header(key: str) -> str:
    m = METRICS[key]
    return f"{m.label} ({m.unit})" if m.unit else m.label


def cmp_lookup(result) -> dict[tuple[float, str, str], Any]:
    c = result.comparisons
    return {(float(r.level), r.metric, r.endpoint): r for r in c.itertuples(index=False)}


def report_title(result) -> str:
    eps = " vs ".join(ep_name(result, ep) for ep in result.endpoints)
    return f"LLM load test report: {eps}"
