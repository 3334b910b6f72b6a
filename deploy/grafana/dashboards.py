"""The shipped Grafana dashboards as data: load them, list their panels, queries and variables,
substitute variables into PromQL as Grafana does, and check their structure offline.

Grafana cannot be installed on the development machine, so the dashboards are tested in two
ways: ``check_structure`` (fast, no processes: ids, datasources, variables, layout, and every
metric name a query uses against ``core.rundir.series``), and a live test
(tests/local/test_e2e_vllm.py) that evaluates every query against a real Prometheus during a
real run, with the variables substituted here.

Plain functions over the dashboard JSON (dicts), stdlib only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from core.rundir import series

HERE = Path(__file__).resolve().parent
DASHBOARDS_DIR = HERE / "dashboards"
PROVISIONING_DIR = HERE / "provisioning"
DATASOURCE_UID = "llm-prometheus"          # provisioning/datasources/prometheus.yml
DATASOURCE_TYPE = "prometheus"
DATASOURCE_VARIABLE = "${datasource}"      # allowed too, if a dashboard defines that variable
GRID_WIDTH = 24

# Grafana's global variables a query may use without defining them.
BUILTIN_VARIABLES = frozenset({
    "__interval", "__interval_ms", "__rate_interval", "__rate_interval_ms", "__range",
    "__range_s", "__range_ms", "__from", "__to", "__dashboard", "__name", "__org", "__user",
    "timeFilter", "__timeFilter",
})

# Series every Prometheus target has (the scrape's own series).
PROMETHEUS_BUILTIN_METRICS = frozenset({
    "up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added",
    "scrape_samples_post_metric_relabeling",
})

# $name, ${name}, ${name:format}, ${name.field}, [[name]], [[name:format]]
_VARIABLE_RE = re.compile(
    r"\$(?P<plain>\w+)"
    r"|\$\{(?P<braced>\w+)(?:\.(?P<fieldpath>[\w.]+))?(?::(?P<fmt>[\w-]+))?\}"
    r"|\[\[(?P<old>\w+)(?::(?P<oldfmt>[\w-]+))?\]\]")

_PROMQL_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan", "atan2", "start", "end",
    # aggregation operators, which may stand before "by (...)" rather than "("
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile",
})
_LABEL_VALUES_RE = re.compile(r"^\s*label_values\s*\((?:(?P<selector>.+),)?\s*(?P<label>\w+)\s*\)\s*$",
                              re.S)


# ------------------------------------------------------------------------------------------------
# Loading and listing
# ------------------------------------------------------------------------------------------------

def dashboard_paths(folder: Path = DASHBOARDS_DIR) -> list[Path]:
    """The shipped dashboard files, sorted."""
    return sorted(folder.glob("*.json"))


def load(path: Path | str) -> dict:
    """One dashboard's JSON model."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_all(folder: Path = DASHBOARDS_DIR) -> dict[str, dict]:
    """Every shipped dashboard by file name."""
    return {p.name: load(p) for p in dashboard_paths(folder)}


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict]:
    """Every panel, rows included, and the panels nested in (collapsed) rows, in order."""
    def walk(panels: Sequence[dict]) -> Iterator[dict]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels") or [])
    yield from walk(dashboard.get("panels") or [])


def is_row(panel: Mapping[str, Any]) -> bool:
    return panel.get("type") == "row"


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a dashboard: a panel's target, or an annotation's."""
    panel_id: int | None
    panel_title: str
    ref_id: str
    expr: str
    legend: str = ""
    kind: str = "panel"          # "panel" or "annotation"
    datasource: Any = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        return f"{self.kind} {self.panel_title!r} {self.ref_id}"


def queries(dashboard: Mapping[str, Any], *, annotations: bool = True) -> list[Query]:
    """Every panel target (rows have none) and, optionally, every Prometheus annotation query."""
    out = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets") or []:
            out.append(Query(panel.get("id"), panel.get("title", ""), target.get("refId", ""),
                             target.get("expr", ""), target.get("legendFormat", ""), "panel",
                             target.get("datasource", panel.get("datasource")), target))
    if annotations:
        for ann in (dashboard.get("annotations") or {}).get("list") or []:
            if ann.get("builtIn") or "expr" not in ann:
                continue
            out.append(Query(None, ann.get("name", ""), "annotation", ann["expr"],
                             ann.get("titleFormat", ""), "annotation", ann.get("datasource"), ann))
    return out


def variables(dashboard: Mapping[str, Any]) -> list[dict]:
    """The template variables, in dashboard order."""
    return list((dashboard.get("templating") or {}).get("list") or [])


def variable_query(variable: Mapping[str, Any]) -> str:
    """A query variable's query text (Grafana stores a string or {"query": ..., ...})."""
    q = variable.get("query", "")
    if isinstance(q, Mapping):
        q = q.get("query", "")
    return q or variable.get("definition", "")


def parse_label_values(query: str) -> tuple[str | None, str] | None:
    """``label_values(selector, label)`` -> (selector, label); ``label_values(label)`` -> (None,
    label); anything else -> None."""
    m = _LABEL_VALUES_RE.match(query)
    if not m:
        return None
    selector = m.group("selector")
    return (selector.strip() if selector else None), m.group("label")


# ------------------------------------------------------------------------------------------------
# Variables
# ------------------------------------------------------------------------------------------------

def referenced_variables(text: str) -> set[str]:
    """Names of the variables a text uses (built-ins such as ``__rate_interval`` included)."""
    names = set()
    for m in _VARIABLE_RE.finditer(text):
        names.add(m.group("plain") or m.group("braced") or m.group("old"))
    return names


def regex_escape(value: str) -> str:
    """Grafana's Prometheus escaping of one value of a multi-value variable in a regex matcher."""
    value = value.replace("\\", "\\\\\\\\")              # one backslash -> four (PromQL string, regex)
    return re.sub(r"([$^*+?.()|{}\[\]'])", r"\\\\\1", value)


def _format(values: str | Sequence[str], fmt: str | None) -> str:
    if isinstance(values, str):            # one raw value (a custom "all" value such as .*)
        return values
    values = list(values)
    if fmt in ("raw",):
        return ",".join(values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt in (None, "regex"):             # the Prometheus data source's default for multi-value
        if len(values) == 1:
            return regex_escape(values[0])
        return "(" + "|".join(regex_escape(v) for v in values) + ")"
    raise ValueError(f"unsupported variable format :{fmt}")


def grafana_intervals(step_s: float, scrape_interval_s: float, range_s: float) -> dict[str, str]:
    """Grafana's built-in intervals for a query at ``step_s`` (``$__interval``) with the data
    source's scrape interval: ``$__rate_interval`` = max($__interval + scrape, 4 x scrape)."""
    interval = max(step_s, scrape_interval_s)
    rate = max(interval + scrape_interval_s, 4 * scrape_interval_s)

    def dur(s: float) -> str:
        return f"{int(round(s * 1000))}ms"
    return {"__interval": dur(interval), "__interval_ms": str(int(round(interval * 1000))),
            "__rate_interval": dur(rate), "__rate_interval_ms": str(int(round(rate * 1000))),
            "__range": f"{int(round(range_s))}s", "__range_s": str(int(round(range_s))),
            "__range_ms": str(int(round(range_s * 1000)))}


def substitute(expr: str, values: Mapping[str, str | Sequence[str]]) -> str:
    """Replace every variable in ``expr`` as Grafana's Prometheus data source does.

    ``values`` maps a name to a list of selected values (escaped for a regex and joined as
    ``(a|b)``; a single value of a plain ``$var`` is escaped alone) or to one string used as it
    is (an "All" value such as ``.*``, or a built-in such as ``__rate_interval`` -> ``8s``).
    A variable missing from ``values`` raises KeyError.
    """
    def repl(m: re.Match) -> str:
        name = m.group("plain") or m.group("braced") or m.group("old")
        fmt = m.group("fmt") or m.group("oldfmt")
        if name not in values:
            raise KeyError(f"no value for variable ${name} in {expr!r}")
        return _format(values[name], fmt)
    return _VARIABLE_RE.sub(repl, expr)


# ------------------------------------------------------------------------------------------------
# Metric names
# ------------------------------------------------------------------------------------------------

def known_metrics() -> frozenset[str]:
    """Every series name the suite knows: the client's, the exporter's and vLLM's (from
    ``core.rundir.series``, histograms with their _bucket/_sum/_count), and Prometheus' own."""
    names = set(PROMETHEUS_BUILTIN_METRICS)
    prefixes = ("nvml_", "server_process", "exporter_", series.VLLM_PREFIX, series.CLIENT_PREFIX)
    for key, value in vars(series).items():
        if (key.isupper() and isinstance(value, str) and value.startswith(prefixes)
                and re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", value)
                and not value.endswith(("_", ":"))):
            names.add(value)
    for hist in (*series.VLLM_HISTOGRAMS, *series.CLIENT_HISTOGRAMS):
        names.update(f"{hist}{s}" for s in series.HISTOGRAM_SUFFIXES)
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (functions, keywords, labels, strings,
    numbers and durations left out). Variables are replaced by placeholders first."""
    text = _VARIABLE_RE.sub("VAR", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', text)   # strings
    names = set()
    # {__name__="x"} / {__name__=~"x"} in a matcher names a metric too
    for m in re.finditer(r'__name__\s*=\s*"([^"]*)"', _VARIABLE_RE.sub("VAR", expr)):
        names.add(m.group(1))
    text = re.sub(r"\{[^{}]*\}", " ", text)                                         # matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)                                       # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", r"\1 ", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d*)?([eE][+-]?\d+)?(ms|s|m|h|d|w|y)?", " ", text)  # numbers
    for m in re.finditer(r"(?<![\w:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _PROMQL_KEYWORDS or word == "VAR":
            continue
        names.add(word)
    return names


# ------------------------------------------------------------------------------------------------
# Structure
# ------------------------------------------------------------------------------------------------

def _datasource_ok(ds: Any, dashboard_vars: set[str]) -> bool:
    if isinstance(ds, Mapping):
        uid = ds.get("uid")
        if uid == DATASOURCE_VARIABLE and "datasource" in dashboard_vars:
            return True
        return uid == DATASOURCE_UID and ds.get("type", DATASOURCE_TYPE) == DATASOURCE_TYPE
    if isinstance(ds, str):
        return ds == DATASOURCE_VARIABLE and "datasource" in dashboard_vars
    return False


def _overlaps(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def _check_layout(panels: Sequence[dict], where: str) -> list[str]:
    problems, placed = [], []
    for panel in panels:
        label = f"{where}panel {panel.get('id')} {panel.get('title', '')!r}"
        pos = panel.get("gridPos")
        if not isinstance(pos, Mapping) or not all(
                isinstance(pos.get(k), int) for k in ("x", "y", "w", "h")):
            problems.append(f"{label}: gridPos missing or incomplete (x, y, w, h)")
            continue
        if pos["x"] < 0 or pos["y"] < 0 or pos["w"] <= 0 or pos["h"] <= 0 \
                or pos["x"] + pos["w"] > GRID_WIDTH:
            problems.append(f"{label}: gridPos {dict(pos)} is outside the {GRID_WIDTH}-column grid")
        for other_label, other in placed:
            if _overlaps(pos, other):
                problems.append(f"{label}: gridPos overlaps {other_label}")
        placed.append((label, pos))
    return problems


def check_structure(dashboard: Mapping[str, Any],
                    known: frozenset[str] | None = None) -> list[str]:
    """Problems with one dashboard; an empty list when it is sound.

    Unique panel ids; every panel (rows excepted) and every target and annotation with the
    provisioned data source (or ``${datasource}`` where that variable exists); variables with
    unique names, query variables with a query and a data source, every referenced variable
    defined (or a Grafana built-in); every gridPos present, inside the grid and not overlapping;
    every metric a query or variable uses known (``known_metrics``).
    """
    known = known_metrics() if known is None else known
    problems: list[str] = []
    if not dashboard.get("uid"):
        problems.append("dashboard has no uid")
    if not dashboard.get("title"):
        problems.append("dashboard has no title")

    vars_ = variables(dashboard)
    names = [v.get("name") for v in vars_]
    defined = {n for n in names if n}
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"variable {n!r} is defined more than once")
    for v in vars_:
        name = v.get("name")
        if not name or not re.fullmatch(r"\w+", name):
            problems.append(f"variable with a bad name {name!r}")
            continue
        kind = v.get("type")
        if kind not in ("query", "datasource", "custom", "constant", "interval", "textbox",
                        "adhoc"):
            problems.append(f"variable {name!r}: unknown type {kind!r}")
        if kind == "query":
            q = variable_query(v)
            if not q:
                problems.append(f"variable {name!r}: query variable without a query")
            if not _datasource_ok(v.get("datasource"), defined):
                problems.append(f"variable {name!r}: data source is not {DATASOURCE_UID!r}")
            lv = parse_label_values(q) if q else None
            if q and lv is None and not q.strip().startswith(("label_names(", "metrics(",
                                                              "query_result(")):
                problems.append(f"variable {name!r}: unsupported query {q!r}")
            for metric in metric_names(lv[0]) if lv and lv[0] else set():
                if metric not in known:
                    problems.append(f"variable {name!r}: unknown metric {metric!r}")
            for ref in referenced_variables(q) - defined - BUILTIN_VARIABLES:
                problems.append(f"variable {name!r}: references undefined variable ${ref}")
            if name in referenced_variables(q):
                problems.append(f"variable {name!r}: references itself")
        if kind == "datasource" and v.get("query") != DATASOURCE_TYPE:
            problems.append(f"variable {name!r}: data source variable not of type prometheus")

    ids: dict[Any, str] = {}
    for panel in iter_panels(dashboard):
        pid, title = panel.get("id"), panel.get("title", "")
        label = f"panel {pid} {title!r}"
        if not isinstance(pid, int):
            problems.append(f"panel {title!r}: no integer id")
        elif pid in ids:
            problems.append(f"{label}: id {pid} already used by {ids[pid]!r}")
        else:
            ids[pid] = title
        if not title:
            problems.append(f"{label}: no title")
        if is_row(panel):
            if panel.get("targets"):
                problems.append(f"{label}: a row with targets")
            continue
        if not panel.get("type"):
            problems.append(f"{label}: no type")
        if not _datasource_ok(panel.get("datasource"), defined):
            problems.append(f"{label}: data source is not {DATASOURCE_UID!r}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{label}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            problems.append(f"{label}: refIds missing or repeated {refs}")

    for q in queries(dashboard):
        if not _datasource_ok(q.datasource, defined):
            problems.append(f"{q.name}: data source is not {DATASOURCE_UID!r}")
        if not q.expr.strip():
            problems.append(f"{q.name}: empty expression")
            continue
        if q.expr.count("(") != q.expr.count(")") or q.expr.count("{") != q.expr.count("}"):
            problems.append(f"{q.name}: unbalanced brackets in {q.expr!r}")
        for ref in sorted(referenced_variables(q.expr) - defined - BUILTIN_VARIABLES):
            problems.append(f"{q.name}: references undefined variable ${ref}")
        for metric in sorted(metric_names(q.expr) - known):
            problems.append(f"{q.name}: unknown metric {metric!r}")

    top = dashboard.get("panels") or []
    problems += _check_layout(top, "")
    for row in top:
        if is_row(row) and row.get("panels"):
            problems += _check_layout(row["panels"], f"row {row.get('title', '')!r}: ")
    return problems
