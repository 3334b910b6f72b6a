"""Multi-turn conversations: first turns against later turns, per endpoint and stage level.

A later turn sends the whole history (earlier messages and answers), so its prompt is longer;
with prefix caching the server may reuse the history's KV cache and its TTFT need not grow with
it. This module sets the two side by side:

    turn_requests(records, windows) -> DataFrame    one run's steady conversation turns
    analyse_turns([frames]) -> TurnsResult           first vs later turns, and turn by turn

The selection is every per-run figure's: the steady window's requests (phase == steady, of a
stage with a window). Percentiles are over the completed requests of all runs pooled (one
repetition's many requests weigh more than another's few), linear interpolation as everywhere
in the report (analysis.stats). Records without conversations (turn 0) give an empty result.
Plain frames in, plain frames out; inputs are never changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TURN_COLUMNS = ("endpoint", "level", "turn", "ok", "ttft_s", "prompt_tokens")
SUMMARY_COLUMNS = ("endpoint", "level", "requests_first", "requests_later", "failed_first",
                   "failed_later", "ttft_p50_first_ms", "ttft_p50_later_ms", "ttft_p50_ratio",
                   "ttft_p99_first_ms", "ttft_p99_later_ms", "ttft_p99_ratio",
                   "prompt_tokens_first", "prompt_tokens_later")
BY_TURN_COLUMNS = ("endpoint", "level", "turn", "requests", "failed", "ttft_p50_ms",
                   "ttft_p99_ms", "prompt_tokens_mean")
_MS = 1000.0


def turn_requests(records: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    """One run's steady requests that are conversation turns (turn >= 1), as TURN_COLUMNS:
    ``windows`` maps stage to level (analysis.compute.stage_windows)."""
    if "turn" not in records or not len(records) or not len(windows):
        return pd.DataFrame(columns=list(TURN_COLUMNS))
    level = dict(zip(windows["stage"].astype(int), windows["level"].astype(float)))
    sel = records[(records["phase"] == "steady") & (records["turn"] > 0)]
    levels = sel["stage"].astype(int).map(level)
    sel, levels = sel[levels.notna()], levels[levels.notna()]
    return pd.DataFrame({
        "endpoint": sel["endpoint"].astype(str), "level": levels.astype(float),
        "turn": sel["turn"].astype(int), "ok": sel["ok"].astype(bool),
        "ttft_s": sel["ttft_s"].astype(float),
        "prompt_tokens": sel["prompt_tokens"].astype(float),
    }).reset_index(drop=True)


@dataclass
class TurnsResult:
    """First vs later turns (SUMMARY_COLUMNS) and turn by turn (BY_TURN_COLUMNS), each one row
    per endpoint and level (and turn); both empty when no record is a conversation's turn."""

    summary: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=list(SUMMARY_COLUMNS)))
    by_turn: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=list(BY_TURN_COLUMNS)))

    @property
    def empty(self) -> bool:
        return not len(self.summary)


def _pct(values: pd.Series, q: float) -> float:
    v = values.to_numpy(dtype=float)
    v = v[~np.isnan(v)]
    return float(np.percentile(v, q)) * _MS if len(v) else math.nan


def _mean(values: pd.Series) -> float:
    v = values.to_numpy(dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else math.nan


def _ratio(later: float, first: float) -> float:
    return later / first if first > 0 and not math.isnan(later) else math.nan


def analyse_turns(parts: list[pd.DataFrame], endpoints: list[str] | None = None) -> TurnsResult:
    """First vs later turns over the runs' ``turn_requests`` frames. ``endpoints`` orders the
    rows (the report's order: baseline first); others follow in order of appearance."""
    frames = [p for p in parts if len(p)]
    if not frames:
        return TurnsResult()
    turns = pd.concat(frames, ignore_index=True)
    order = list(endpoints or [])
    order += [e for e in dict.fromkeys(turns["endpoint"]) if e not in order]
    summary, by_turn = [], []
    for ep in order:
        mine = turns[turns["endpoint"] == ep]
        for level in sorted(mine["level"].unique()):
            here = mine[mine["level"] == level]
            done = here[here["ok"]]
            first, later = done[done["turn"] == 1], done[done["turn"] >= 2]
            failed = here[~here["ok"]]
            row = {"endpoint": ep, "level": float(level),
                   "requests_first": len(first), "requests_later": len(later),
                   "failed_first": int((failed["turn"] == 1).sum()),
                   "failed_later": int((failed["turn"] >= 2).sum())}
            for q in (50, 99):
                a, b = _pct(first["ttft_s"], q), _pct(later["ttft_s"], q)
                row[f"ttft_p{q}_first_ms"], row[f"ttft_p{q}_later_ms"] = a, b
                row[f"ttft_p{q}_ratio"] = _ratio(b, a)
            row["prompt_tokens_first"] = _mean(first["prompt_tokens"])
            row["prompt_tokens_later"] = _mean(later["prompt_tokens"])
            summary.append(row)
            for turn in sorted(here["turn"].unique()):
                of_turn = here[here["turn"] == turn]
                ok = of_turn[of_turn["ok"]]
                by_turn.append({"endpoint": ep, "level": float(level), "turn": int(turn),
                                "requests": len(ok), "failed": int((~of_turn["ok"]).sum()),
                                "ttft_p50_ms": _pct(ok["ttft_s"], 50),
                                "ttft_p99_ms": _pct(ok["ttft_s"], 99),
                                "prompt_tokens_mean": _mean(ok["prompt_tokens"])})
    return TurnsResult(pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS)),
                       pd.DataFrame(by_turn, columns=list(BY_TURN_COLUMNS)))
