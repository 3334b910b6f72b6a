"""The report's sections, in order: each a short function of the Result (and its figures)."""

from __future__ import annotations

import json
from typing import Any, Callable

import pandas as pd

from core.records import ERROR_CATEGORIES, FIELD_DEFINITIONS

from ..catalogue import METRICS, shown_in
from ..definitions import OTHER_DEFINITIONS
from ..errors import WARNING_CODES
from ..outages import MIN_DOWN_S
from .model import NA, Lookup, Section, Table, cmp_lookup, ep_name, fmt_level, isnan
from .tables import (at_table, by_view_table, comparisons_table, down_tables, errors_table,
                     gpu_memory_table, level_columns_table, paired_tables, per_run_table,
                     runs_table, turns_tables, capacity_tables)

Figure = tuple    # (id, caption, png, figures.FigureData or None): see figures.all_figures
Figures = dict[str, Figure]    # id -> figure


class _Context:
    """What the sections share: the result, its lookups and its figures."""

    def __init__(self, result, figures: list[Figure]):
        self.result = result
        self.lk = Lookup(result)
        self.cmps = cmp_lookup(result)
        self.figures = figures
        self.figs: Figures = {f[0]: f for f in figures}


def build_sections(result, figures: list[Figure]) -> list[Section]:
    cx = _Context(result, figures)
    # a section that does not apply to these runs (None) is left out
    return [s for s in (make(cx) for make in SECTIONS) if s is not None]


def summary_section(cx: _Context) -> Section:
    result, ln = cx.result, cx.result.level_name
    s = Section("summary", "Summary")
    for note in result.options.notes:
        s.p(f"Note: {note}")
    eps = ", ".join(ep_name(result, ep) for ep in result.endpoints)
    s.p(f"{len(result.runs)} run(s); endpoints {eps}; baseline {result.baseline}; "
        f"{len(result.levels)} level(s) of {ln}: "
        + ", ".join(fmt_level(x) for x in result.levels) + ".")
    if result.slos:
        s.p("SLOs for goodput: " + ", ".join(f"{k} <= {v:g}" for k, v in result.slos.items()) + ".")
    else:
        s.p("No SLOs given (--slo): goodput equals throughput.")
    if result.at_level is not None:
        lines = []
        for key in shown_in("headline"):
            for ep in result.endpoints[1:]:
                c = cx.cmps.get((float(result.at_level), key, ep))
                if c is not None:
                    lines.append(f"At {fmt_level(result.at_level)} {ln}: {c.verdict}.")
        if lines:
            s.items(lines)
    if result.at_level is not None and abs(result.at_level - result.options.at) > 1e-9:
        s.p(f"--at {result.options.at:g} is not a level of these runs; the nearest, "
            f"{fmt_level(result.at_level)}, is used.")
    return s


def warnings_section(cx: _Context) -> Section:
    warnings = cx.result.warnings
    s = Section("warnings", f"Warnings ({len(warnings)})")
    if warnings:
        s.items([w.text() for w in warnings])
    else:
        s.p("None: no saturated load generator, no chunk-counted tokens, no metric gaps, no "
            "config or record-count mismatch, no empty stage.")
    return s


def capacity_section(cx: _Context) -> Section | None:
    """Only when the runs come from a capacity campaign (capacity.json beside runs/)."""
    data = cx.result.capacity
    if not data:
        return None
    from ..capacity import Slo, lateness_note, slos_words
    slos = slos_words(Slo(x["metric"], x["limit"]) for x in data["slos"])
    st = data["settings"]
    s = Section("capacity", "Capacity under SLO")
    what = "number of users (closed loop)" if data["mode"] == "closed" else \
        "request rate (open loop, req/s)"
    s.p(f"Each endpoint's capacity is the highest {what} at which every SLO held over a probe's steady window: {slos}. Each probe is one run "
        "of one stage (the runs of this report); the search doubled from "
        f"{st['start']:g} {data['level_name']} (halved if that failed) to bracket the capacity, "
        f"then bisected until the bracket was within {st['precision']:.0%}"
        + (" or 1 user" if data["mode"] == "closed" else "")
        + f", at most {st['max_probes']} probes per search. A probe whose load generator was "
        "late counts neither as pass nor fail. Goodput: " + data["goodput"] + f". From "
        f"{data['path']}.")
    headlines = data["comparison"].get("headlines") or []
    if headlines:
        s.items(headlines)
    note = lateness_note(data)
    if note:
        s.p("Note: " + note + ".")
    for t in capacity_tables(cx.result):
        s.table(t)
    return s


def at_section(cx: _Context) -> Section:
    s = Section("at", "At N concurrent requests")
    t = at_table(cx.result, cx.lk, cx.cmps)
    if t is not None:
        s.title = t.title
        s.table(t)
    else:
        s.p("No level to show.")
    return s


def utilization_section(cx: _Context) -> Section:
    s = Section("gpu-utilization", "GPU utilization by concurrency")
    t = level_columns_table(cx.result, cx.lk, "gpu_utilization",
                            "GPU utilization by concurrency (%)", "gpu_util_mean",
                            [("sm_active_mean", "SM activity %"), ("kv_cache_mean", "KV-cache %")])
    if t is not None:
        t.note = ("NVML utilization is the share of time any kernel ran: it reads high even at "
                  "batch size 1 and says little about headroom; SM activity and KV-cache usage "
                  "say more.")
        s.table(t)
    else:
        s.p("No GPU utilization samples in these runs (CPU-served models, or no exporter).")
    t = level_columns_table(cx.result, cx.lk, "process_cpu",
                            "Server process CPU by concurrency (cores)", "cpu_cores_mean",
                            [("kv_cache_mean", "KV-cache %")])
    if t is not None:
        s.table(t)
    if "utilization" in cx.figs:
        s.figure(*cx.figs["utilization"])
    return s


def memory_section(cx: _Context) -> Section:
    s = Section("gpu-memory", "GPU memory")
    t, sentence = gpu_memory_table(cx.result, cx.lk)
    if t is None:
        return s.p("No GPU memory or process memory samples in these runs.")
    if not cx.lk.has("gpu_mem_used_mean"):
        t.title = "Memory (no GPU samples: server process RSS)"
    s.table(t)
    if sentence:
        s.p(sentence)
    return s.p("vLLM pre-allocates most GPU memory for its KV cache (--gpu-memory-utilization, "
               "0.9 by default): memory in use measures that setting as much as the model. "
               "Compare KV-cache usage, or run both with the same setting.")


def latency_section(cx: _Context) -> Section:
    s = Section("latency", "Latency by concurrency")
    for fid in ("latency", "distribution"):
        if fid in cx.figs:
            s.figure(*cx.figs[fid])
    t = by_view_table(cx.result, cx.lk, "latency", "Latency by concurrency")
    if t is not None:
        s.table(t)
    return s


def throughput_section(cx: _Context) -> Section:
    s = Section("throughput", "Throughput by concurrency")
    if "throughput" in cx.figs:
        s.figure(*cx.figs["throughput"])
    t = by_view_table(cx.result, cx.lk, "throughput", "Throughput by concurrency")
    if t is not None:
        s.table(t)
    return s


def tokens_section(cx: _Context) -> Section:
    s = Section("tokens", "Tokens by concurrency")
    t = by_view_table(cx.result, cx.lk, "tokens", "Token-level figures by concurrency",
                      "Requests/s mean little without the tokens behind them: a model that stops "
                      "earlier 'wins'. Compare output tokens per request and TPOT.")
    if t is not None:
        s.table(t)
    return s


def server_section(cx: _Context) -> Section:
    s = Section("server", "Server-side view (vLLM metrics)")
    t = by_view_table(cx.result, cx.lk, "server", "vLLM's own figures beside the client's",
                      "vLLM's TTFT runs from the request's arrival in the server to its first "
                      "token; the client's adds the network and the client. A large gap between "
                      "them points at the client or the network.")
    if t is not None and any(cx.lk.has(m) for m in ("vllm_ttft_mean", "running_mean",
                                                      "kv_cache_mean", "power_mean")):
        return s.table(t)
    return s.p("No server metric samples in these runs.")


def errors_section(cx: _Context) -> Section:
    s = Section("errors", "Errors")
    t = errors_table(cx.result)
    if t is not None:
        s.table(t)
    else:
        s.p("No failed steady-state requests.")
    downs = down_tables(cx.result)
    for t in downs:
        s.table(t)
    if not downs:
        s.p(f"No endpoint was down (failing every request for at least {MIN_DOWN_S:g} s) in "
            "any run.")
    return s


def comparison_section(cx: _Context) -> Section:
    s = Section("comparison", "Comparison, stage by stage")
    t = comparisons_table(cx.result)
    return s.table(t) if t is not None else s.p("One endpoint only: nothing to compare.")


def paired_section(cx: _Context) -> Section:
    s = Section("paired", "Paired A/B (same requests)")
    pr = cx.result.paired
    estimates, counts = paired_tables(cx.result)
    if estimates is None:
        return s.p(pr.reason or "Nothing to pair.")
    s.p("Every endpoint got the same requests (prompt, requested output length, and in open "
        "loop arrival offset) under the same request_key in each repetition; here each request "
        "of an endpoint is compared with the same request on the baseline, so what both share "
        "(a long prompt, a long answer) cancels out of the comparison.")
    turns = getattr(cx.result, "turns", None)
    if turns is not None and not turns.empty:
        s.p("Multi-turn conversations: a key is the same turn of the same conversation on every "
            "endpoint, with the same new user message, but a later turn's history holds each "
            "endpoint's own earlier answers, so its prompt (and prompt tokens) can differ "
            "between endpoints.")
    s.table(estimates)
    return s.table(counts)


def turns_section(cx: _Context) -> Section | None:
    """Only when the runs had multi-turn conversations."""
    summary, by_turn = turns_tables(cx.result)
    if summary is None:
        return None
    s = Section("turns", "Multi-turn: first vs later turns")
    s.p("Each user ran conversations: turn 1 a whole first request, each later turn the whole "
        "history (earlier messages and the endpoint's own answers) and a new user message. A "
        "later turn's prompt is longer: a server that reuses the history's KV cache (prefix "
        "caching) can keep its TTFT near turn 1's, one that computes the whole prompt again "
        "pays for its length.")
    s.table(summary)
    return s.table(by_turn)


def timeseries_section(cx: _Context) -> Section:
    s = Section("timeseries", "Time series")
    drawn = [f for f in cx.figures if f[0].startswith("timeseries-")]
    for fig in drawn:
        s.figure(*fig)
    return s if drawn else s.p("No records to plot.")


def per_run_section(cx: _Context) -> Section:
    return Section("per-run", "Per-run figures").table(per_run_table(cx.result))


def setup_section(cx: _Context) -> Section:
    result = cx.result
    s = Section("setup", "Test setup")
    st = result.setup
    rows = []
    for ep, cfg in st["endpoints"].items():
        req = cfg.get("request") or {}
        rows.append({"endpoint": ep, "model": str(cfg.get("model") or ""),
                     "base_url": str(cfg.get("base_url") or ""),
                     "extra_body": json.dumps(cfg.get("extra_body") or {}, sort_keys=True),
                     "max_tokens": str(req.get("max_tokens", "")),
                     "temperature": str(req.get("temperature", "")),
                     "ignore_eos": str(req.get("ignore_eos", "")),
                     "metrics": ", ".join(x for x in (cfg.get("metrics_url"),
                                                      cfg.get("exporter_url")) if x)})
    s.table(Table("setup_endpoints", "Endpoints and models", pd.DataFrame(rows)))
    load = st.get("load") or {}
    s.table(Table("setup_load", "Load settings (first run)",
                  pd.DataFrame([{"setting": k, "value": json.dumps(v) if isinstance(v, (list, dict))
                                 else str(v)} for k, v in load.items()])))
    hosts = "; ".join(f"{h.get('hostname', '?')} ({h.get('platform', '?')}, "
                      f"{h.get('cpu_count', '?')} CPUs)" for h in st.get("hosts") or [])
    versions = "; ".join(", ".join(f"{k} {v}" for k, v in ver.items())
                         for ver in st.get("versions") or [])
    s.p(f"Load generator host(s): {hosts or NA}. Versions: {versions or NA}. "
        f"Campaign(s): {', '.join(st.get('campaigns') or []) or NA}. Repetitions: "
        f"{', '.join(str(r) for r in st.get('repetitions') or [])}.")
    gpu_total: dict[str, Any] = {}
    for (ep, _, m), v in cx.lk.d.items():
        if m == "gpu_mem_total" and not isnan(v.mean):
            gpu_total.setdefault(ep, v.mean)
    if gpu_total:
        s.p("GPU memory total per endpoint: " + ", ".join(f"{ep} {v:.1f} GiB"
                                                          for ep, v in gpu_total.items()) + ".")
    s.table(runs_table(result))
    return s.p("Inputs: " + ", ".join(result.inputs))


def definitions_section(cx: _Context | None = None) -> Section:
    s = Section("definitions", "Definitions")
    s.p("Computed figures (analysis.definitions):")
    s.defs([(f"{m.label}" + (f" ({m.unit})" if m.unit else "") + f" [{m.key}]", m.definition)
            for m in METRICS.values()])
    s.p("Method:")
    s.defs(list(OTHER_DEFINITIONS.items()))
    s.p("Per-request record fields (core.records.FIELD_DEFINITIONS):")
    s.defs(list(FIELD_DEFINITIONS.items()))
    s.p("Error categories (core.records.ERROR_CATEGORIES):")
    s.defs(list(ERROR_CATEGORIES.items()))
    s.p("Warnings:")
    return s.defs(list(WARNING_CODES.items()))


SECTIONS: list[Callable[[_Context], Section | None]] = [
    summary_section, warnings_section, capacity_section, at_section, utilization_section,
    memory_section,
    latency_section, throughput_section, tokens_section, server_section, errors_section,
    comparison_section, paired_section, turns_section, timeseries_section, per_run_section,
    setup_section, definitions_section]
