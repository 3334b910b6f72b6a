"""Statistics used by the report: percentiles, confidence intervals, tests. One place each.

- Percentiles are linear-interpolation percentiles (numpy's and pandas' default, Hyndman & Fan
  type 7): p50 of [1, 2, 3, 4] is 2.5. (core.records.gap_summary uses nearest rank for the per-request
  ITL fields; those are computed by the load generator.)
- Repetitions combine into mean, sample standard deviation (ddof=1) and a 95% Student-t
  interval over the per-repetition values (n >= 2; one run has no interval): t_half_width.
- Per-run metrics (req/s, means, utilization) are compared with Welch's t-test over
  per-repetition values; the 95% CI of the change is Welch's interval of the difference of means
  divided by the baseline mean.
- Per-request latencies (TTFT, E2E, TPOT) are compared with a two-sided Mann-Whitney U test over
  the pooled steady-state requests and a hierarchical bootstrap of the ratio of medians
  (resample runs with replacement, then requests within each run, equal weight per run).
All randomness comes from numpy's default_rng seeded from (seed, comparison name): a report
built twice from the same runs is identical.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

PERCENTILE_METHOD = "linear interpolation (numpy 'linear', Hyndman-Fan type 7)"
CI_LEVEL = 0.95
BOOTSTRAP_MAX_PER_RUN = 1000     # requests drawn per run per bootstrap iteration
BOOTSTRAP_POOL_PER_RUN = 50_000  # a run's requests kept to draw from (seeded subsample)


def t_half_width(n, std):
    """Half-width of the 95% Student-t interval of a mean: t(0.975, n-1) * std / sqrt(n).

    Vectorised over arrays of n (counts) and std (sample standard deviations, ddof=1); NaN where
    n < 2 (one run has no interval).
    """
    n = np.asarray(n)
    tcrit = np.where(n >= 2, sps.t.ppf(0.5 + CI_LEVEL / 2, np.maximum(n - 1, 1)), np.nan)
    return tcrit * np.asarray(std, dtype=float) / np.sqrt(n)


def seed_for(seed: int, *parts: object) -> int:
    """A stable seed for one comparison, independent of the order comparisons are made in."""
    text = "|".join(str(p) for p in (seed, *parts))
    return zlib.crc32(text.encode("utf-8"))


@dataclass
class Comparison:
    method: str
    n_a: int
    n_b: int
    value_a: float
    value_b: float
    change_pct: float      # (B / A - 1) * 100
    ci_low_pct: float      # 95% CI of the change, percent
    ci_high_pct: float
    p_value: float
    real: bool | None      # None: cannot judge (too few runs/requests)


def welch_compare(a, b) -> Comparison:
    """Compare per-repetition values of B against A (Welch's t-test, CI of diff / mean A)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    na, nb = a.size, b.size
    ma = float(a.mean()) if na else math.nan
    mb = float(b.mean()) if nb else math.nan
    change = (mb / ma - 1.0) * 100.0 if na and nb and ma != 0 else math.nan
    method = "Welch t-test over per-repetition values"
    if na and nb and ma == 0 and mb == 0 and not a.any() and not b.any():
        return Comparison(method, na, nb, ma, mb, 0.0, math.nan, math.nan, 1.0,
                          False if na >= 2 and nb >= 2 else None)
    if na < 2 or nb < 2 or ma == 0:
        return Comparison(method, na, nb, ma, mb, change, math.nan, math.nan, math.nan, None)
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    diff = mb - ma
    if se == 0:
        real = diff != 0
        p = 0.0 if real else 1.0
        lo = hi = change
    else:
        df = (va + vb) ** 2 / ((va ** 2) / (na - 1) + (vb ** 2) / (nb - 1)) if (va + vb) > 0 else na + nb - 2
        tcrit = float(sps.t.ppf(0.5 + CI_LEVEL / 2, df))
        p = float(2 * sps.t.sf(abs(diff) / se, df))
        lo = (diff - tcrit * se) / abs(ma) * 100.0
        hi = (diff + tcrit * se) / abs(ma) * 100.0
        real = p < 1 - CI_LEVEL
    return Comparison(method, na, nb, ma, mb, change, lo, hi, p, bool(real))


def _bootstrap_medians(runs: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Hierarchical bootstrap of the pooled median: runs with replacement, then requests."""
    k = len(runs)
    m = min(BOOTSTRAP_MAX_PER_RUN, min(r.size for r in runs))
    width = min(max(r.size for r in runs), BOOTSTRAP_POOL_PER_RUN)
    mat = np.zeros((k, width))
    lens = np.empty(k, dtype=np.int64)
    for i, r in enumerate(runs):
        if r.size > width:  # a seeded subsample bounds memory; draws come from it
            r = rng.choice(r, size=width, replace=False)
        mat[i, : r.size] = r
        lens[i] = r.size
    out = np.empty(n_boot)
    chunk = max(1, 4_000_000 // max(1, k * m))
    for start in range(0, n_boot, chunk):
        nb = min(chunk, n_boot - start)
        pick_runs = rng.integers(0, k, size=(nb, k))
        idx = (rng.random((nb, k, m)) * lens[pick_runs][:, :, None]).astype(np.int64)
        vals = mat[pick_runs[:, :, None], idx].reshape(nb, k * m)
        out[start : start + nb] = np.median(vals, axis=1)
    return out


def request_compare(a_runs: list[np.ndarray], b_runs: list[np.ndarray], *, seed: int,
                    n_boot: int = 1000) -> Comparison:
    """Compare per-request values (one array per run) of B against A by their medians."""
    a_runs = [np.asarray(r, dtype=float)[~np.isnan(np.asarray(r, dtype=float))] for r in a_runs]
    b_runs = [np.asarray(r, dtype=float)[~np.isnan(np.asarray(r, dtype=float))] for r in b_runs]
    a_runs = [r for r in a_runs if r.size]
    b_runs = [r for r in b_runs if r.size]
    method = ("Mann-Whitney U over pooled requests + hierarchical bootstrap CI of the ratio of "
              "medians (runs, then requests)")
    if not a_runs or not b_runs:
        return Comparison(method, len(a_runs), len(b_runs), math.nan, math.nan, math.nan,
                          math.nan, math.nan, math.nan, None)
    a_all = np.concatenate(a_runs)
    b_all = np.concatenate(b_runs)
    ma, mb = float(np.median(a_all)), float(np.median(b_all))
    change = (mb / ma - 1.0) * 100.0 if ma != 0 else math.nan
    if a_all.size < 5 or b_all.size < 5 or ma == 0:
        return Comparison(method, len(a_runs), len(b_runs), ma, mb, change, math.nan, math.nan,
                          math.nan, None)
    p = float(sps.mannwhitneyu(a_all, b_all, alternative="two-sided", method="asymptotic").pvalue)
    rng = np.random.default_rng(seed)
    boot_a = _bootstrap_medians(a_runs, n_boot, rng)
    boot_b = _bootstrap_medians(b_runs, n_boot, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = boot_b / boot_a
    ratio = ratio[np.isfinite(ratio)]
    if ratio.size == 0:
        return Comparison(method, len(a_runs), len(b_runs), ma, mb, change, math.nan, math.nan,
                          p, None)
    lo, hi = np.percentile(ratio, [100 * (1 - CI_LEVEL) / 2, 100 * (1 + CI_LEVEL) / 2])
    lo_pct, hi_pct = (lo - 1) * 100.0, (hi - 1) * 100.0
    real = bool(p < 1 - CI_LEVEL and (lo_pct > 0 or hi_pct < 0))
    return Comparison(method, len(a_runs), len(b_runs), ma, mb, change, float(lo_pct),
                      float(hi_pct), p, real)


def verdict_words(subject: str, metric: str, cmp: Comparison, lower_is_better: bool | None,
                  baseline: str) -> str:
    """'B's TTFT p50 is 31% lower than A's (95% CI 25-36% lower); real difference'."""
    if math.isnan(cmp.change_pct):
        return f"{subject}'s {metric}: no value to compare"
    direction = "higher" if cmp.change_pct > 0 else "lower"
    text = f"{subject}'s {metric} is {abs(cmp.change_pct):.0f}% {direction} than {baseline}'s"
    if cmp.change_pct == 0:
        text = f"{subject}'s {metric} equals {baseline}'s"
    if not math.isnan(cmp.ci_low_pct):
        text += f" (95% CI {_ci_words(cmp.ci_low_pct, cmp.ci_high_pct)})"
    if cmp.real is None:
        why = ("needs >= 2 runs per endpoint" if cmp.method.startswith("Welch")
               else "too few requests")
        return text + f"; cannot judge ({why})"
    if not cmp.real:
        return text + "; not distinguishable from noise"
    better = ""
    if lower_is_better is not None:
        good = (cmp.change_pct < 0) == lower_is_better
        better = " (better)" if good else " (worse)"
    return text + "; real difference" + better


def _ci_words(lo: float, hi: float) -> str:
    if lo >= 0:
        return f"{lo:.0f}-{hi:.0f}% higher"
    if hi <= 0:
        return f"{-hi:.0f}-{-lo:.0f}% lower"
    return f"{-lo:.0f}% lower to {hi:.0f}% higher"
