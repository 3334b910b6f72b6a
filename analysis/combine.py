"""Runs combined and endpoints compared: the catalogue's figures over repetitions, and B against A.

    combine(per_run) -> long table endpoint, level, metric, n, mean, std, ci_low, ci_high
    compare(per_run, request_values, endpoints, baseline, levels) -> one row per comparison
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .catalogue import METRICS, REQUEST_COMPARED, RUN_COMPARED
from .stats import Comparison, request_compare, seed_for, t_half_width, verdict_words, welch_compare


def count_runs(frame: pd.DataFrame) -> int:
    """Distinct runs in a frame with campaign and run_id columns: a run is (campaign, run_id)."""
    if not len(frame):
        return 0
    return len(frame[["campaign", "run_id"]].drop_duplicates())


def combine(per_run: pd.DataFrame) -> pd.DataFrame:
    """Long table: endpoint, level, metric, n, mean, std, ci_low, ci_high (t-interval over runs)."""
    keys = [k for k in METRICS if k in per_run]
    long = per_run.melt(id_vars=["endpoint", "level"], value_vars=keys, var_name="metric",
                        value_name="value").dropna(subset=["value"])
    if not len(long):
        return pd.DataFrame(columns=["endpoint", "level", "metric", "n", "mean", "std", "ci_low",
                                     "ci_high"])
    g = long.groupby(["endpoint", "level", "metric"], sort=False)["value"]
    out = g.agg(n="count", mean="mean", std="std").reset_index()
    n = out["n"].to_numpy()
    half = t_half_width(n, out["std"].to_numpy())
    out["ci_low"] = out["mean"] - half
    out["ci_high"] = out["mean"] + half
    out.loc[n < 2, "std"] = np.nan
    order = {k: i for i, k in enumerate(keys)}
    out["_o"] = out["metric"].map(order)
    return out.sort_values(["endpoint", "level", "_o"]).drop(columns="_o").reset_index(drop=True)


def compare(per_run: pd.DataFrame, request_values: dict, endpoints: list[str], baseline: str,
            levels: list[float], *, seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """One row per level x compared endpoint x compared metric (catalogue: REQUEST_COMPARED,
    then RUN_COMPARED): B against the baseline."""
    rows = []
    for level in levels:
        a_rows = per_run[(per_run["endpoint"] == baseline) & (per_run["level"] == level)]
        for ep in endpoints:
            if ep == baseline:
                continue
            b_rows = per_run[(per_run["endpoint"] == ep) & (per_run["level"] == level)]
            if not len(a_rows) or not len(b_rows):
                continue
            for key, col in REQUEST_COMPARED.items():
                a = request_values.get((baseline, level), {}).get(col, [])
                b = request_values.get((ep, level), {}).get(col, [])
                if not a or not b:
                    continue
                cmp = request_compare(a, b, seed=seed_for(seed, baseline, ep, level, key),
                                      n_boot=n_boot)
                cmp.value_a *= 1000.0    # medians in ms, like the tables
                cmp.value_b *= 1000.0
                rows.append(_cmp_row(level, key, baseline, ep, cmp))
            for key in RUN_COMPARED:
                if key not in per_run:
                    continue
                a, b = a_rows[key].to_numpy(float), b_rows[key].to_numpy(float)
                if np.isnan(a).all() or np.isnan(b).all():
                    continue
                rows.append(_cmp_row(level, key, baseline, ep, welch_compare(a, b)))
    cols = ["level", "metric", "baseline", "endpoint", "value_baseline", "value", "change_pct",
            "ci_low_pct", "ci_high_pct", "p_value", "n_baseline", "n", "real", "method", "verdict"]
    return pd.DataFrame(rows, columns=cols)


def _cmp_row(level, key, baseline, ep, cmp: Comparison) -> dict[str, Any]:
    md = METRICS[key]
    words = verdict_words(ep, md.label, cmp, md.lower_is_better, baseline)
    return {"level": level, "metric": key, "baseline": baseline, "endpoint": ep,
            "value_baseline": cmp.value_a, "value": cmp.value_b, "change_pct": cmp.change_pct,
            "ci_low_pct": cmp.ci_low_pct, "ci_high_pct": cmp.ci_high_pct, "p_value": cmp.p_value,
            "n_baseline": cmp.n_a, "n": cmp.n_b,
            "real": "n/a" if cmp.real is None else ("yes" if cmp.real else "no"),
            "method": cmp.method, "verdict": words}
