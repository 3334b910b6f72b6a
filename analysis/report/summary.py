"""The summaries: summary.json's dict, and the one-screen terminal text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..catalogue import METRICS, shown_in
from ..definitions import OTHER_DEFINITIONS
from .model import NA, Lookup, cmp_lookup, fmt_level, fmt_pct_change, json_safe, records_json, report_title
from .tables import at_rows


def summary_dict(result) -> dict[str, Any]:
    lk = Lookup(result)
    at = {}
    if result.at_level is not None:
        cmps = cmp_lookup(result)
        for key, _ in at_rows():
            entry = {}
            for ep in result.endpoints:
                r = lk.get(ep, result.at_level, key)
                if r is not None:
                    entry[ep] = {"mean": r.mean, "std": r.std, "ci_low": r.ci_low,
                                 "ci_high": r.ci_high, "n": r.n}
                c = cmps.get((float(result.at_level), key, ep))
                if c is not None:
                    entry.setdefault(ep, {})["vs_baseline"] = {
                        "change_pct": c.change_pct, "ci_low_pct": c.ci_low_pct,
                        "ci_high_pct": c.ci_high_pct, "p_value": c.p_value, "real": c.real,
                        "verdict": c.verdict}
            if entry:
                at[key] = entry
    return json_safe({
        "report_schema": 1, "inputs": result.inputs,
        "runs": [r.__dict__ for r in result.runs], "endpoints": result.endpoints,
        "models": result.models, "baseline": result.baseline, "mode": result.mode,
        "level_name": result.level_name, "levels": result.levels, "at_level": result.at_level,
        "slos": result.slos, "warnings": [w.to_dict() for w in result.warnings], "at": at,
        "down_windows": records_json(result.down_windows),
        "combined": records_json(result.combined), "comparisons": records_json(result.comparisons),
        "paired": _paired(result),
        "capacity": _capacity(result),
        "turns": _turns(result),
        "setup": result.setup,
        "definitions": {k: m.definition for k, m in METRICS.items()} | OTHER_DEFINITIONS,
    })


def _capacity(result) -> dict[str, Any] | None:
    """Capacity under SLO (analysis.capacity) when the runs come from a capacity campaign."""
    data = getattr(result, "capacity", None)
    if not data:
        return None
    from ..capacity import probe_rows, search_rows
    return {"source": data["path"], "mode": data["mode"], "level_name": data["level_name"],
            "slos": data["slos"], "goodput": data["goodput"], "settings": data["settings"],
            "searches": search_rows(data), "probes": probe_rows(data),
            "comparison": data["comparison"]}


def _paired(result) -> dict[str, Any]:
    """The paired A/B (analysis.paired): estimates, pair counts, or why there is none."""
    pr = getattr(result, "paired", None)
    if pr is None:
        return {"reason": "not computed", "estimates": [], "counts": []}
    verdicts = paired_terminal_verdicts(result)
    return {"reason": pr.reason, "mode": pr.mode,
            # what the terminal summary prints: the level and its verdicts
            "headline_level": verdicts[0][0] if verdicts else None,
            "headline": [text for _, text in verdicts],
            "estimates": records_json(pr.estimates_frame()),
            "counts": records_json(pr.counts_frame())}


def _turns(result) -> dict[str, Any]:
    """Multi-turn conversations (analysis.turns): first vs later turns and turn by turn; both
    lists empty when the runs had none."""
    tr = getattr(result, "turns", None)
    if tr is None:
        return {"summary": [], "by_turn": []}
    return {"summary": records_json(tr.summary), "by_turn": records_json(tr.by_turn)}


def paired_terminal_verdicts(result) -> list[tuple[float, str]]:
    """(level, verdict) of the paired A/B for the terminal summary: the At-N level, else the
    highest level with pairs; the metrics the terminal view shows that are paired, then the
    other paired ones."""
    pr = getattr(result, "paired", None)
    if pr is None or not pr.estimates:
        return []
    levels = sorted({e.level for e in pr.estimates})
    level = (float(result.at_level) if result.at_level is not None
             and float(result.at_level) in levels else levels[-1])
    order = {k: i for i, k in enumerate(shown_in("terminal") + shown_in("paired"))}
    chosen = [e for e in pr.estimates if e.level == level]
    chosen.sort(key=lambda e: (order.get(e.metric, len(order)), e.endpoint))
    return [(level, e.verdict) for e in chosen]


def _paired_lines(result) -> list[str]:
    verdicts = paired_terminal_verdicts(result)
    if not verdicts:
        return []
    level = verdicts[0][0]
    return (["", f"Paired A/B at {fmt_level(level)} {result.level_name} (the same requests sent "
             "to each endpoint; 95% CI over repetitions and requests):"]
            + [f"  {text}" for _, text in verdicts])


def summary_text(result, paths: dict[str, Any] | None = None, width: int = 100) -> str:
    """A one-screen terminal summary: the At-N table, the verdicts, the warnings."""
    lk = Lookup(result)
    cmps = cmp_lookup(result)
    lines = [report_title(result)]
    lines += [f"Note: {note}" for note in result.options.notes]
    lines.append(f"{len(result.runs)} run(s), {len(result.levels)} level(s) of "
                 f"{result.level_name}: " + ", ".join(fmt_level(x) for x in result.levels))
    if result.at_level is not None:
        lines.append("")
        lines.append(f"At {fmt_level(result.at_level)} {result.level_name} "
                     f"(mean over runs ± 95% CI):")
        eps = result.endpoints
        w0 = 32
        cw = max(16, min(24, (width - w0 - 20) // max(1, len(eps))))
        header = f"  {'metric':<{w0}}" + "".join(f"{ep[:cw - 1]:>{cw}}" for ep in eps)
        if len(eps) > 1:
            header += f"{'change':>10}  real?"
        lines.append(header)
        for key, label in at_rows():
            if not any(lk.get(ep, result.at_level, key) is not None for ep in eps):
                continue
            row = f"  {label[:w0]:<{w0}}" + "".join(
                f"{lk.cell(ep, result.at_level, key)[:cw - 1]:>{cw}}" for ep in eps)
            if len(eps) > 1:
                c = cmps.get((float(result.at_level), key, eps[1]))
                row += (f"{fmt_pct_change(c.change_pct):>10}  {c.real}" if c is not None
                        else f"{NA:>10}  {NA}")
            lines.append(row)
        verdicts = [cmps[(float(result.at_level), k, ep)].verdict
                    for k in shown_in("terminal") for ep in eps[1:]
                    if (float(result.at_level), k, ep) in cmps]
        if verdicts:
            lines.append("")
            lines += [f"  {v}" for v in verdicts]
    lines += _paired_lines(result)
    capacity = getattr(result, "capacity", None)
    if capacity and capacity["comparison"].get("headlines"):
        from ..capacity import lateness_note
        note = lateness_note(capacity)
        lines += ["", "Capacity under SLO:"] + [
            f"  {t}" for t in capacity["comparison"]["headlines"]] + (
            [f"  NOTE: {note}"] if note else [])
    lines.append("")
    if result.warnings:
        lines.append(f"Warnings ({len(result.warnings)}):")
        for w in result.warnings[:8]:
            text = w.text()
            lines.append("  " + (text if len(text) <= width - 2 else text[:width - 5] + "..."))
        if len(result.warnings) > 8:
            lines.append(f"  ... and {len(result.warnings) - 8} more in the report")
    else:
        lines.append("Warnings: none")
    if paths:
        lines.append("")
        lines.append(f"Report: {paths.get('html')}")
        lines.append(f"        {paths.get('md')}, {Path(paths.get('summary')).name}, tables/")
    return "\n".join(lines)
