"""The report's tables: each built from the Result, its rows and columns from the catalogue."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from core.config import is_open_loop

from ..catalogue import METRICS, shown_in
from ..combine import count_runs
from ..outages import MIN_DOWN_S
from .model import (NA, Lookup, Table, ep_name, fmt, fmt_ci, fmt_level, fmt_pct_change, isnan,
                    metric_header)


def at_rows() -> list[tuple[str, str]]:
    """(metric, row label) of the At-N table and summaries: the catalogue's view "at"."""
    return [(k, METRICS[k].at_label) for k in shown_in("at")]


def by_view_table(result, lk: Lookup, view: str, title: str, note: str = "") -> Table | None:
    """Rows endpoint x level, one column per metric of a catalogue view; tables/<view>.csv."""
    return by_level_table(result, lk, view, title, shown_in(view), note)


def by_level_table(result, lk: Lookup, name: str, title: str, metrics: list[str],
                    note: str = "") -> Table | None:
    """Rows endpoint x level, one column per metric."""
    metrics = [m for m in metrics if lk.has(m)]
    if not metrics:
        return None
    rows = []
    for ep in result.endpoints:
        for level in result.levels:
            if not any(lk.get(ep, level, m) is not None for m in metrics + ["requests"]):
                continue
            row = {"endpoint": ep_name(result, ep), result.level_name: fmt_level(level)}
            for m in metrics:
                row[metric_header(m)] = lk.cell(ep, level, m)
            rows.append(row)
    return Table(name, title, pd.DataFrame(rows), lk.raw(metrics), note)


def level_columns_table(result, lk: Lookup, name: str, title: str, metric: str,
                         extra: list[tuple[str, str]] = ()) -> Table | None:
    """Study shape: rows = level, one column per endpoint (plus extra metrics per endpoint)."""
    if not lk.has(metric):
        return None
    rows = []
    for level in result.levels:
        row = {result.level_name: fmt_level(level)}
        for ep in result.endpoints:
            row[ep_name(result, ep)] = lk.cell(ep, level, metric)
        for key, label in extra:
            if lk.has(key):
                for ep in result.endpoints:
                    row[f"{ep_name(result, ep)} {label}"] = lk.cell(ep, level, key)
        rows.append(row)
    return Table(name, title, pd.DataFrame(rows), lk.raw([metric] + [k for k, _ in extra]))


def at_table(result, lk: Lookup, cmps: dict) -> Table | None:
    level = result.at_level
    if level is None:
        return None
    rows, raw = [], []
    others = [e for e in result.endpoints if e != result.baseline]
    for key, label in at_rows():
        if not any(lk.get(ep, level, key) is not None for ep in result.endpoints):
            continue
        row = {"metric": label}
        raw_row: dict[str, Any] = {"metric": key}
        for ep in result.endpoints:
            row[ep_name(result, ep)] = lk.cell(ep, level, key)
            r = lk.get(ep, level, key)
            raw_row[f"{ep}_mean"] = r.mean if r is not None else math.nan
            raw_row[f"{ep}_ci_low"] = r.ci_low if r is not None else math.nan
            raw_row[f"{ep}_ci_high"] = r.ci_high if r is not None else math.nan
            raw_row[f"{ep}_n"] = r.n if r is not None else 0
        for ep in others:
            c = cmps.get((float(level), key, ep))
            suffix = f" {ep} vs {result.baseline}" if len(others) > 1 else ""
            if c is None:
                row[f"change{suffix}"] = NA
                row[f"real?{suffix}"] = NA
                continue
            change = fmt_pct_change(c.change_pct)
            if not isnan(c.ci_low_pct):
                change += f" [{c.ci_low_pct:+.0f}, {c.ci_high_pct:+.0f}]"
            row[f"change{suffix}"] = change
            row[f"real?{suffix}"] = c.real
            raw_row[f"{ep}_change_pct"] = c.change_pct
            raw_row[f"{ep}_change_ci_low_pct"] = c.ci_low_pct
            raw_row[f"{ep}_change_ci_high_pct"] = c.ci_high_pct
            raw_row[f"{ep}_p_value"] = c.p_value
            raw_row[f"{ep}_real"] = c.real
        rows.append(row)
        raw.append(raw_row)
    if not rows:
        return None
    n_runs = {ep: count_runs(result.per_run[(result.per_run["endpoint"] == ep) &
                                            (result.per_run["level"] == level)])
              for ep in result.endpoints}
    note = ("Mean over runs ± 95% CI half-width (runs: "
            + ", ".join(f"{ep} {n}" for ep, n in n_runs.items())
            + f"). change = B / {result.baseline} - 1 with its 95% CI in brackets; real? = the "
            "difference passes the test in Definitions (yes), does not (no: not distinguishable "
            "from noise), or cannot be judged (n/a).")
    return Table(f"at_{fmt_level(level)}", f"At {fmt_level(level)} concurrent requests"
                 if result.level_name == "users" else f"At {fmt_level(level)} req/s",
                 pd.DataFrame(rows), pd.DataFrame(raw), note)


def gpu_memory_table(result, lk: Lookup) -> tuple[Table | None, str]:
    level = result.at_level
    metrics = [m for m in shown_in("gpu_memory") if lk.has(m)]
    if not metrics or level is None:
        return None, ""
    rows = []
    for ep in result.endpoints:
        row = {"endpoint": ep_name(result, ep)}
        for m in metrics:
            if METRICS[m].stat in ("max", "total"):
                # the largest over every stage of every run
                vals = [v.mean for k, v in lk.d.items() if k[0] == ep and k[2] == m]
                vals = [v for v in vals if not isnan(v)]
                row[metric_header(m) + (", all stages" if METRICS[m].stat == "max" else "")] = (
                    fmt(max(vals), 2) if vals else NA)
            else:
                row[metric_header(m) + f" at {fmt_level(level)} {result.level_name}"] = \
                    lk.cell(ep, level, m)
        rows.append(row)
    sentence = ""
    key = "gpu_mem_used_mean" if lk.has("gpu_mem_used_mean") else (
        "rss_mean" if lk.has("rss_mean") else None)
    if key and len(result.endpoints) > 1:
        a = lk.get(result.baseline, level, key)
        parts = []
        for ep in result.endpoints[1:]:
            b = lk.get(ep, level, key)
            if a is None or b is None or isnan(a.mean) or isnan(b.mean) or a.mean == 0:
                continue
            diff = b.mean - a.mean
            parts.append(f"{ep} uses {abs(diff):.2f} GiB ({abs(diff) / a.mean * 100:.1f}%) "
                         f"{'less' if diff < 0 else 'more'} "
                         f"{'GPU memory' if key.startswith('gpu') else 'process memory (RSS)'} "
                         f"than {result.baseline} at {fmt_level(level)} {result.level_name}")
        sentence = "; ".join(parts) + "." if parts else ""
    raw = lk.raw(metrics)
    return Table("gpu_memory", "GPU memory", pd.DataFrame(rows), raw), sentence


def errors_table(result) -> Table | None:
    e = result.errors
    if e is None or not len(e):
        return None
    keys = ["endpoint", "level"]
    pr = result.per_run
    total = pr.groupby(keys)["requests"].sum()
    # per time: the steady windows (all runs together) in which the endpoint had requests
    active = pr[pr["requests"] > 0]
    seconds = active.groupby(keys)["duration"].sum(min_count=1)
    down = active.groupby(keys)["down_s"].sum(min_count=1)
    g = e.groupby(["endpoint", "level", "error_category"], dropna=False)
    agg = g["count"].sum().reset_index()
    if "example" in e:
        ex = e.dropna(subset=["example"]).groupby(["endpoint", "level", "error_category"])[
            "example"].first()
        agg = agg.merge(ex.reset_index(), on=["endpoint", "level", "error_category"], how="left")
    else:
        agg["example"] = ""
    agg["share_pct"] = [r.count / n * 100 if n > 0 else math.nan
                        for r, n in ((r, total.get((r.endpoint, r.level), 0))
                                     for r in agg.itertuples(index=False))]
    agg["steady_s"] = [seconds.get((r.endpoint, r.level), math.nan)
                       for r in agg.itertuples(index=False)]
    agg["failures_per_s"] = agg["count"] / agg["steady_s"].where(agg["steady_s"] > 0)
    agg["down_s"] = [down.get((r.endpoint, r.level), math.nan) for r in agg.itertuples(index=False)]
    agg["down_share"] = agg["down_s"] / agg["steady_s"].where(agg["steady_s"] > 0) * 100.0
    rows = []
    for r in agg.itertuples(index=False):
        rows.append({"endpoint": ep_name(result, r.endpoint),
                     result.level_name: fmt_level(r.level), "category": r.error_category,
                     "failed requests": fmt(int(r.count)),
                     "% of steady requests": fmt(r.share_pct, 2),
                     metric_header("failures_per_s"): fmt(r.failures_per_s,
                                                           METRICS["failures_per_s"].decimals),
                     metric_header("down_s"): fmt(r.down_s, METRICS["down_s"].decimals),
                     metric_header("down_share"): fmt(r.down_share,
                                                       METRICS["down_share"].decimals),
                     "example message": "" if isnan(r.example) else str(r.example)[:200]})
    return Table("errors", "Errors by category", pd.DataFrame(rows), agg,
                 "Failed steady-state requests, all runs together. % of steady requests is the "
                 "per-request error rate; failures per second divides the same failures by the "
                 "steady windows' seconds, and endpoint down (s, share of those seconds) is the "
                 f"time the endpoint failed every request for at least {MIN_DOWN_S:g} s (for the "
                 "endpoint and level, all categories; see down window in Definitions): clients "
                 "retrying a down endpoint make a short outage read as a high error rate. "
                 "Categories: core.records.ERROR_CATEGORIES (see Definitions).")


def down_tables(result) -> list[Table]:
    """One 'Endpoint down' table per run with down windows (analysis.outages)."""
    dw = result.down_windows
    if dw is None or not len(dw):
        return []
    tables = []
    for i, (name, g) in enumerate(dw.groupby("run", sort=False)):
        rows = [{"endpoint": ep_name(result, r.endpoint),
                 "start (s into the run)": fmt(r.start_s, 1),
                 "duration (s)": fmt(r.duration_s, 1), "failures": fmt(int(r.failures)),
                 "dominant error category": str(r.error_category)}
                for r in g.itertuples(index=False)]
        tables.append(Table(f"endpoint_down-{i + 1}", f"Endpoint down: run {name}",
                            pd.DataFrame(rows), g.reset_index(drop=True),
                            f"Spans of at least {MIN_DOWN_S:g} s in which the endpoint's "
                            "requests ended and none succeeded (down window in Definitions); "
                            "start is seconds since the run's start; every phase counts, not "
                            "only steady windows. Numbers: tables/endpoint_down.csv.",
                            write=False))
    return tables


def comparisons_table(result) -> Table | None:
    c = result.comparisons
    if not len(c):
        return None
    rows = []
    for r in c.itertuples(index=False):
        md = METRICS[r.metric]
        rows.append({result.level_name: fmt_level(r.level), "metric": md.label,
                     result.baseline: fmt(r.value_baseline, md.decimals) + (f" {md.unit}" if md.unit else ""),
                     "endpoint": r.endpoint, "value": fmt(r.value, md.decimals)
                     + (f" {md.unit}" if md.unit else ""),
                     "change": fmt_pct_change(r.change_pct),
                     "95% CI of change": NA if isnan(r.ci_low_pct) else
                     f"{r.ci_low_pct:+.1f}% to {r.ci_high_pct:+.1f}%",
                     "p": NA if isnan(r.p_value) else f"{r.p_value:.3g}",
                     "verdict": r.verdict})
    return Table("comparisons", "Comparison, stage by stage: is each difference real?",
                 pd.DataFrame(rows), c,
                 "p50 rows: per-request test (Mann-Whitney U + hierarchical bootstrap of the "
                 "ratio of medians); other rows: Welch t-test over per-repetition values. "
                 "Values are medians of pooled requests (p50 rows) or means over runs.")


def per_run_table(result) -> Table:
    pr = result.per_run
    cols = ["run", "repetition", "endpoint", "level", "duration"] + shown_in("per_run")
    per_time = ("failures_per_s", "down_share")      # shown when there is something to show
    cols = [c for c in cols if c in pr and (c not in METRICS or c == "req_per_s" or (
        (pr[c] > 0).any() if c in per_time else pr[c].notna().any()))]
    rows = []
    for r in pr.sort_values(["endpoint", "level", "repetition", "campaign", "run_id"]
                            ).itertuples(index=False):
        row = {}
        for c in cols:
            v = getattr(r, c)
            if c in METRICS:
                row[metric_header(c)] = fmt(v, METRICS[c].decimals)
            elif c == "level":
                row[result.level_name] = fmt_level(v)
            elif c == "duration":
                row["steady window (s)"] = fmt(v, 1)
            else:
                row[c] = str(v)
        rows.append(row)
    return Table("per_run", "Per-run figures", pd.DataFrame(rows), pr,
                 "One row per run, endpoint and stage (tables/per_run.csv has every figure).")


def runs_table(result) -> Table:
    rows = []
    for r in result.runs:
        rows.append({"run": r.name, "campaign": r.campaign, "endpoints": ", ".join(r.endpoints),
                     "repetition": str(r.repetition), "status": r.status,
                     "records": fmt(r.records),
                     "records_written": fmt(r.records_written) if isinstance(r.records_written, int) else NA,
                     "Locust CHAT requests": fmt(r.locust_chat_requests) if isinstance(r.locust_chat_requests, int) else NA,
                     "load generator max CPU %": fmt(r.max_cpu_percent, 0)
                     if isinstance(r.max_cpu_percent, (int, float)) else NA,
                     "saturated": "yes" if r.saturated else "no",
                     "metrics": r.metrics_source})
    raw = pd.DataFrame([r.__dict__ for r in result.runs])
    if len(raw):
        raw["endpoints"] = raw["endpoints"].map(lambda x: ",".join(x))
    return Table("runs", "Runs", pd.DataFrame(rows), raw)


def paired_tables(result) -> tuple[Table | None, Table | None]:
    """The paired A/B (analysis.paired): the estimates (tables/paired) and the pair counts per
    repetition and stage (tables/paired_counts)."""
    pr = getattr(result, "paired", None)
    if pr is None or not pr.estimates:
        return None, None
    est = pr.estimates_frame()
    rows = []
    for e in pr.estimates:
        s = e.stat
        rows.append({result.level_name: fmt_level(e.level), "metric": e.name,
                     "endpoint": e.endpoint, "pairs": fmt(s.n_pairs),
                     "repetitions": fmt(s.n_reps),
                     "change (median of B/A)": fmt_pct_change(s.change_pct),
                     "95% CI of change": NA if isnan(s.ci_low_pct) else
                     f"{s.ci_low_pct:+.1f}% to {s.ci_high_pct:+.1f}%",
                     "mean B - A (ms)": NA if isnan(s.mean_diff_ms) else (
                         f"{s.mean_diff_ms:+,.1f}" + ("" if isnan(s.mean_diff_ci_low_ms) else
                                                      f" [{s.mean_diff_ci_low_ms:+,.1f}, "
                                                      f"{s.mean_diff_ci_high_ms:+,.1f}]")),
                     "verdict": e.verdict})
    one_rep = any(e.stat.n_reps == 1 for e in pr.estimates)
    note = ("Pairs: the same request (repetition, stage, request_key) sent to both endpoints. "
            "change = exp(median over pairs of log(B / A)) - 1: how much slower or faster B is "
            "on the same requests; mean B - A: the mean paired difference, with its 95% CI in "
            "brackets. 95% CI: hierarchical bootstrap (repetitions, then pairs within each).")
    if one_rep:
        note += (" Where repetitions is 1 the bootstrap resamples pairs only: the CI covers "
                 "request-level noise only, not run-to-run spread.")
    estimates = Table("paired", "Paired A/B: the same requests on both endpoints",
                      pd.DataFrame(rows), est, note)
    counts = pr.counts_frame()
    crow = []
    for c in pr.counts:
        crow.append({"repetition": c.repetition, result.level_name: fmt_level(c.level),
                     "endpoint": f"{c.endpoint} vs {c.baseline}", "pairs": fmt(c.pairs),
                     f"unpaired {c.baseline}": fmt(c.unpaired_baseline),
                     "unpaired, compared endpoint": fmt(c.unpaired_endpoint),
                     "without key": fmt(c.blank_baseline + c.blank_endpoint),
                     "runs": c.runs})
    loop = ("Closed loop: each user sends its next request when the last ends, so the faster "
            "endpoint sends more requests in the same window; its extra keys have no partner."
            if not is_open_loop(pr.mode) else
            "Open loop: both endpoints get the same arrivals; unpaired requests are failures "
            "or requests at the window's edges.")
    count_table = Table("paired_counts", "Paired A/B: pairs per repetition and stage",
                        pd.DataFrame(crow), counts,
                        "Completed steady requests joined on (stage, request_key) within each "
                        "repetition. " + loop + " Requests without a key (older runs) never "
                        "pair.")
    return estimates, count_table


def turns_tables(result) -> tuple[Table | None, Table | None]:
    """Multi-turn conversations (analysis.turns): first vs later turns per endpoint and level
    (tables/turns) and turn by turn (tables/turns_by_turn); None without conversations."""
    tr = getattr(result, "turns", None)
    if tr is None or tr.empty:
        return None, None
    ln = result.level_name

    def ratio(x: float) -> str:
        return NA if isnan(x) else f"{x:.2f}x"

    rows = []
    for r in tr.summary.itertuples(index=False):
        rows.append({"endpoint": ep_name(result, r.endpoint), ln: fmt_level(r.level),
                     "turn-1 requests": fmt(r.requests_first),
                     "later requests": fmt(r.requests_later),
                     "TTFT p50 turn 1 (ms)": fmt(r.ttft_p50_first_ms),
                     "TTFT p50 later (ms)": fmt(r.ttft_p50_later_ms),
                     "p50 later/first": ratio(r.ttft_p50_ratio),
                     "TTFT p99 turn 1 (ms)": fmt(r.ttft_p99_first_ms),
                     "TTFT p99 later (ms)": fmt(r.ttft_p99_later_ms),
                     "p99 later/first": ratio(r.ttft_p99_ratio),
                     "prompt tokens turn 1": fmt(r.prompt_tokens_first),
                     "prompt tokens later": fmt(r.prompt_tokens_later)})
    summary = Table("turns", "Multi-turn: first vs later turns", pd.DataFrame(rows), tr.summary,
                    "Completed steady requests of all runs pooled. Turn 1 is a conversation's "
                    "first request (no history); later turns (2 and on) send the history, "
                    "answers included, so their prompts are longer. later/first: the later "
                    "turns' TTFT percentile divided by turn 1's.")
    rows = []
    for r in tr.by_turn.itertuples(index=False):
        rows.append({"endpoint": ep_name(result, r.endpoint), ln: fmt_level(r.level),
                     "turn": str(r.turn), "requests": fmt(r.requests), "failed": fmt(r.failed),
                     "TTFT p50 (ms)": fmt(r.ttft_p50_ms), "TTFT p99 (ms)": fmt(r.ttft_p99_ms),
                     "mean prompt tokens": fmt(r.prompt_tokens_mean)})
    by_turn = Table("turns_by_turn", "Multi-turn: turn by turn", pd.DataFrame(rows), tr.by_turn,
                    "A failed turn ends its conversation and a stage's steady window cuts "
                    "conversations at its edges, so the turns' counts can differ.")
    return summary, by_turn


def capacity_tables(result) -> list[Table]:
    """Capacity under SLO (analysis.capacity): per endpoint, per search, the ratios, every
    probe. Empty when the runs are not from a capacity campaign."""
    data = getattr(result, "capacity", None)
    if not data:
        return []
    from ..capacity import probe_rows, search_rows
    unit = data["level_name"]
    cmp = data["comparison"]

    def num(x: Any, decimals: int = 2) -> str:
        return NA if x is None or isnan(x) else f"{float(x):,.{decimals}f}"

    rows = [{"endpoint": ep_name(result, e["endpoint"]),
             f"capacity ({unit})": fmt_ci(e["capacity"]["mean"], e["capacity"]["ci_low"],
                                          e["capacity"]["ci_high"], 2),
             "goodput (req/s)": fmt_ci(e["goodput_per_s"]["mean"], e["goodput_per_s"]["ci_low"],
                                       e["goodput_per_s"]["ci_high"], 2),
             "searches with a capacity": f"{e['with_capacity']}/{e['searches']}"}
            for e in cmp["endpoints"]]
    tables = [Table("capacity_endpoints", "Capacity and goodput per endpoint (mean ± 95% CI "
                    "over repetitions)", pd.DataFrame(rows), write=False)]
    ratio_rows = [{"endpoint": ep_name(result, r["endpoint"]), "vs": r["baseline"],
                   "goodput ratio": num(r["ratio"]),
                   "95% CI": (f"{num(r['ci_low'])} to {num(r['ci_high'])}"
                              if not isnan(r["ci_low"]) else NA),
                   "repetitions paired": str(r["n"]),
                   "per repetition": ", ".join(f"r{k}: {num(v)}"
                                               for k, v in r["per_repetition"].items()),
                   "left out": "; ".join(f"r{k}: {v}" for k, v in r["left_out"].items())}
                  for r in cmp["ratios"]]
    if ratio_rows:
        tables.append(Table("capacity_ratios", "Goodput ratio to the baseline, paired by "
                            "repetition", pd.DataFrame(ratio_rows), write=False,
                            note=(cmp["ratios"][0]["method"] + ".")))
    searches = pd.DataFrame(search_rows(data))
    shown = searches.assign(
        capacity=[NA if c is None else f"{c:g}" for c in searches["capacity"]],
        bracket=[f"[{NA if lo is None or isnan(lo) else f'{lo:g}'}, "
                 f"{NA if hi is None or isnan(hi) else f'{hi:g}'}]"
                 for lo, hi in zip(searches["low"], searches["high"])],
        goodput_per_s=[num(g) for g in searches["goodput_per_s"]]
    )[["endpoint", "repetition", "status", "capacity", "bracket", "goodput_per_s", "probes",
       "reason"]].rename(columns={"capacity": f"capacity ({unit})",
                                  "goodput_per_s": "goodput (req/s)"})
    tables.append(Table("capacity_searches", "Each search", shown, searches))
    probes = pd.DataFrame(probe_rows(data))
    if len(probes):
        names = [s["metric"] for s in data["slos"]]
        shown = probes.copy()
        for n in names:
            shown[n] = [num(v, 3 if n != "error_rate" else 4) for v in probes[n]]
        shown["level"] = [f"{v:g}" for v in probes["level"]]
        shown["goodput_per_s"] = [num(g) for g in probes["goodput_per_s"]]
        tables.append(Table("capacity_probes", "Every probe (latencies in s, error_rate a "
                            "share)", shown, probes))
    return tables
