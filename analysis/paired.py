"""Paired A/B: the same requests sent to two endpoints, compared request by request.

Within one repetition every arm (endpoint) gets, for the same ``request_key``
(``<stage>/<stream>/<n>``: the n-th request of user stream <stream> in stage <stage>), the same
prompt, the same requested output length and, in open loop, the same arrival offset. So the runs
of one repetition join request by request on (stage, request_key), and B is compared with the
baseline A on the same requests: the per-request difficulty (prompt, output length) both arms
share cancels out of each pair's ratio, which is what makes the paired comparison sharper than
comparing two independent distributions.

    run_requests(records, windows, ...) -> RunRequests       one run's pairable records
    pair_runs(runs, endpoints, baseline) -> [PairedStage]     the joins, with their counts
    paired_compare(reps, n_boot=, seed=) -> PairedStat        the statistic and its bootstrap CI
    paired_verdict(...) -> str                                the words
    analyse_paired(runs, endpoints, baseline, ...) -> PairedResult   all of the above

The statistic (primary): the median over pairs of log(B / A), back as a ratio (exp): "B is X%
slower/faster than A on the same requests". Also the mean paired difference B - A in ms. The 95%
CI is a hierarchical percentile bootstrap: repetitions with replacement, then pairs within each
resampled repetition with replacement (one repetition: pairs only, and the CI covers
request-level noise only). Plain functions, plain dataclasses; inputs are never changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from .catalogue import METRICS, shown_in
from .stats import CI_LEVEL, _ci_words, seed_for

KEY = "request_key"
# Pairs drawn per repetition per bootstrap resample: a repetition with more pairs is subsampled
# in the resamples (its point estimate uses them all), which widens the CI a little: conservative.
PAIRED_MAX_PER_RUN = 2000
MIN_PAIRS = 5               # fewer pairs: no CI, "cannot judge"
_MS = 1000.0


def paired_metrics() -> dict[str, str]:
    """The catalogue's paired view: metric key -> record column (TTFT, TTFAT, TPOT, E2E p50)."""
    return {k: METRICS[k].column for k in shown_in("paired")}


def metric_name(key: str) -> str:
    """'TTFT' for ttft_p50: the paired statistic is over pairs, not a percentile of one arm."""
    label = METRICS[key].label
    return label[: -len(" p50")] if label.endswith(" p50") else label


# ---------------------------------------------------------------------------------------------
# One run's pairable records

@dataclass(frozen=True)
class RunRequests:
    """One run's completed steady requests, as pairing needs them."""

    run: str                      # the report's name for the run
    campaign: str
    repetition: int
    mode: str                     # closed, open or trace (core.config.is_open_loop)
    keyed: pd.DataFrame           # endpoint, stage, level, request_key, the paired columns
    blank: dict[tuple[str, int], int] = field(default_factory=dict)   # (endpoint, stage) -> n
    # completed steady requests without a key (older runs): never paired


def run_requests(records: pd.DataFrame, windows: pd.DataFrame, *, run: str, campaign: str,
                 repetition: int, mode: str = "closed",
                 columns: Iterable[str] | None = None) -> RunRequests:
    """The run's completed (ok) requests of every stage's steady window (phase == steady, stage
    with a window: the selection every per-run figure uses), with a key; blank keys counted."""
    cols = list(dict.fromkeys(columns if columns is not None else paired_metrics().values()))
    level = dict(zip(windows["stage"].astype(int), windows["level"]))
    sel = records[(records["phase"] == "steady") & records["ok"].astype(bool)]
    lv = sel["stage"].astype(int).map(level).astype(float)
    sel = sel[lv.notna()]
    lv = lv[lv.notna()]
    if KEY in sel:
        raw = sel[KEY].astype(object)
        keys = raw.where(raw.notna(), "").astype(str).str.strip()
    else:
        keys = pd.Series("", index=sel.index, dtype=object)
    has = keys != ""
    blank = {(str(ep), int(st)): int(n) for (ep, st), n in
             sel[~has].groupby([sel["endpoint"].astype(str), sel["stage"].astype(int)]).size()
             .items()}
    keyed = pd.DataFrame({"endpoint": sel.loc[has, "endpoint"].astype(str),
                          "stage": sel.loc[has, "stage"].astype(int),
                          "level": lv[has], KEY: keys[has]})
    for c in cols:
        keyed[c] = sel.loc[has, c].astype(float) if c in sel else math.nan
    return RunRequests(run, campaign, int(repetition), mode, keyed.reset_index(drop=True), blank)


# ---------------------------------------------------------------------------------------------
# Pairing

@dataclass(frozen=True)
class PairedStage:
    """The baseline and one endpoint in one repetition and stage, joined on request_key."""

    baseline: str
    endpoint: str
    repetition: str               # "rep 1" (or "campaign rep 1" across campaigns)
    stage: int
    level: float
    pairs: pd.DataFrame           # request_key, <column>_a (baseline), <column>_b (endpoint)
    unpaired_baseline: int        # keyed baseline requests with no partner
    unpaired_endpoint: int
    blank_baseline: int           # requests without a key (never paired)
    blank_endpoint: int
    runs: tuple[str, ...]         # the runs joined

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)


def _rep_label(campaign: str, repetition: int, many_campaigns: bool) -> str:
    return f"{campaign} rep {repetition}" if many_campaigns else f"rep {repetition}"


def pair_runs(runs: list[RunRequests], endpoints: list[str], baseline: str,
              columns: Iterable[str] | None = None) -> list[PairedStage]:
    """Join the baseline's and each other endpoint's requests of the same repetition (campaign,
    repetition) and stage on request_key. A key seen twice in one arm (the same repetition read
    twice) keeps its first record; the second counts as unpaired."""
    cols = list(dict.fromkeys(columns if columns is not None else paired_metrics().values()))
    many = len({r.campaign for r in runs}) > 1
    reps: dict[tuple[str, int], list[RunRequests]] = {}
    for r in runs:
        reps.setdefault((r.campaign, r.repetition), []).append(r)
    out: list[PairedStage] = []
    for (campaign, rep), group in reps.items():
        frames = {ep: [] for ep in endpoints}
        blank: dict[tuple[str, int], int] = {}
        names: dict[str, list[str]] = {ep: [] for ep in endpoints}
        for r in group:
            for ep, g in r.keyed.groupby("endpoint", sort=False):
                if ep in frames:
                    frames[ep].append(g)
                    names[ep].append(r.run)
            for k, n in r.blank.items():
                blank[k] = blank.get(k, 0) + n
                if k[0] in names and r.run not in names[k[0]]:
                    names[k[0]].append(r.run)
        arm = {ep: (pd.concat(f, ignore_index=True) if f else None) for ep, f in frames.items()}
        a_all = arm.get(baseline)
        for ep in endpoints:
            if ep == baseline:
                continue
            b_all = arm.get(ep)
            stages = sorted({st for (e, st) in blank if e in (baseline, ep)}
                            | (set(a_all["stage"]) if a_all is not None else set())
                            | (set(b_all["stage"]) if b_all is not None else set()))
            for stage in stages:
                a = a_all[a_all["stage"] == stage] if a_all is not None else None
                b = b_all[b_all["stage"] == stage] if b_all is not None else None
                na = 0 if a is None else len(a)
                nb = 0 if b is None else len(b)
                if na and nb:
                    a1 = a.drop_duplicates(KEY)
                    b1 = b.drop_duplicates(KEY)
                    j = a1[[KEY] + cols].merge(b1[[KEY] + cols], on=KEY, suffixes=("_a", "_b"))
                    level = float(a1["level"].iloc[0])
                else:
                    j = pd.DataFrame(columns=[KEY] + [f"{c}_{s}" for s in "ab" for c in cols])
                    src = a if na else b
                    level = float(src["level"].iloc[0]) if src is not None and len(src) else \
                        math.nan
                out.append(PairedStage(
                    baseline, ep, _rep_label(campaign, rep, many), int(stage), level,
                    j.reset_index(drop=True), na - len(j), nb - len(j),
                    blank.get((baseline, stage), 0), blank.get((ep, stage), 0),
                    tuple(dict.fromkeys(names[baseline] + names[ep]))))
    return out


# ---------------------------------------------------------------------------------------------
# The statistic and its hierarchical bootstrap

@dataclass(frozen=True)
class PairedStat:
    n_pairs: int
    n_reps: int
    ratio: float                 # exp(median over pairs of log(B / A))
    change_pct: float            # (ratio - 1) x 100
    ci_low_pct: float            # 95% CI of the change (hierarchical percentile bootstrap)
    ci_high_pct: float
    mean_diff_ms: float          # mean over pairs of B - A, ms
    mean_diff_ci_low_ms: float
    mean_diff_ci_high_ms: float
    real: bool | None            # None: cannot judge (fewer than MIN_PAIRS pairs)
    scope: str                   # what the CI covers


SCOPE_RUNS = "repetitions and requests"
SCOPE_REQUESTS = "requests only (one repetition)"


def _clean(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    return a[ok], b[ok]


def _boot(logs: list[np.ndarray], diffs: list[np.ndarray], n_boot: int,
          rng: np.random.Generator, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """(median of log-ratios, mean of differences) per resample: repetitions with replacement,
    then min(n, cap) pairs with replacement within each picked repetition, pooled."""
    k = len(logs)
    lens = np.array([x.size for x in logs], dtype=np.int64)
    draws = np.minimum(lens, cap)
    width = int(lens.max())
    mat_l = np.zeros((k, width))
    mat_d = np.zeros((k, width))
    for i, (lg, df) in enumerate(zip(logs, diffs)):
        mat_l[i, : lg.size] = lg
        mat_d[i, : df.size] = df
    dmax = int(draws.max())
    med = np.empty(n_boot)
    mean = np.empty(n_boot)
    chunk = max(1, 3_000_000 // max(1, k * dmax))
    slots = np.arange(dmax)
    for start in range(0, n_boot, chunk):
        nb = min(chunk, n_boot - start)
        pick = rng.integers(0, k, size=(nb, k)) if k > 1 else np.zeros((nb, 1), dtype=np.int64)
        idx = (rng.random((nb, k, dmax)) * lens[pick][:, :, None]).astype(np.int64)
        valid = slots[None, None, :] < draws[pick][:, :, None]
        lv = np.where(valid, mat_l[pick[:, :, None], idx], np.nan).reshape(nb, k * dmax)
        dv = np.where(valid, mat_d[pick[:, :, None], idx], 0.0).reshape(nb, k * dmax)
        cnt = valid.reshape(nb, -1).sum(axis=1)
        s = np.sort(lv, axis=1)                    # NaN (unused slots) sort last
        rows = np.arange(nb)
        med[start: start + nb] = (s[rows, (cnt - 1) // 2] + s[rows, cnt // 2]) / 2.0
        mean[start: start + nb] = dv.sum(axis=1) / cnt
    return med, mean


def paired_compare(reps: list[tuple[np.ndarray, np.ndarray]], *, n_boot: int = 1000,
                   seed: int = 0, scale: float = _MS,
                   cap: int = PAIRED_MAX_PER_RUN) -> PairedStat:
    """B against A over pairs, one (a, b) array pair per repetition (a[i], b[i]: the same
    request). Pairs with a missing or non-positive value are left out. scale: values -> ms."""
    cleaned = [_clean(a, b) for a, b in reps]
    cleaned = [(a, b) for a, b in cleaned if a.size]
    n = sum(a.size for a, _ in cleaned)
    scope = SCOPE_RUNS if len(cleaned) > 1 else SCOPE_REQUESTS
    if not n:
        return PairedStat(0, 0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan,
                          math.nan, None, scope)
    logs = [np.log(b) - np.log(a) for a, b in cleaned]
    diffs = [(b - a) * scale for a, b in cleaned]
    ratio = float(np.exp(np.median(np.concatenate(logs))))
    mean_diff = float(np.concatenate(diffs).mean())
    change = (ratio - 1.0) * 100.0
    if n < MIN_PAIRS:
        return PairedStat(n, len(cleaned), ratio, change, math.nan, math.nan, mean_diff,
                          math.nan, math.nan, None, scope)
    rng = np.random.default_rng(seed)
    med, mean = _boot(logs, diffs, n_boot, rng, cap)
    q = [100 * (1 - CI_LEVEL) / 2, 100 * (1 + CI_LEVEL) / 2]
    lo, hi = (np.exp(np.percentile(med, q)) - 1.0) * 100.0
    dlo, dhi = np.percentile(mean, q)
    real = bool(lo > 0 or hi < 0)
    return PairedStat(n, len(cleaned), ratio, change, float(lo), float(hi), mean_diff,
                      float(dlo), float(dhi), real, scope)


def paired_verdict(subject: str, metric: str, st: PairedStat, lower_is_better: bool | None,
                   baseline: str) -> str:
    """'On the same 412 requests, B's TTFT is 18% higher than A's (paired, 95% CI 12-24%
    higher): real difference (worse)'."""
    if not st.n_pairs or math.isnan(st.change_pct):
        return f"{subject}'s {metric}: no pair to compare with {baseline}'s"
    direction = "higher" if st.change_pct > 0 else "lower"
    text = f"On the same {st.n_pairs:,} requests, {subject}'s {metric} is "
    text += (f"{abs(st.change_pct):.0f}% {direction} than {baseline}'s" if st.change_pct != 0
             else f"the same as {baseline}'s")
    if st.real is None:
        return text + f" (paired); cannot judge (fewer than {MIN_PAIRS} pairs)"
    text += f" (paired, 95% CI {_ci_words(st.ci_low_pct, st.ci_high_pct)})"
    if not st.real:
        return text + ": no clear difference"
    better = ""
    if lower_is_better is not None:
        better = " (better)" if (st.change_pct < 0) == lower_is_better else " (worse)"
    return text + ": real difference" + better


# ---------------------------------------------------------------------------------------------
# Everything, for the report

@dataclass(frozen=True)
class PairCount:
    """How many requests paired in one repetition and stage (PairedStage without its pairs)."""

    baseline: str
    endpoint: str
    repetition: str
    stage: int
    level: float
    pairs: int
    unpaired_baseline: int
    unpaired_endpoint: int
    blank_baseline: int
    blank_endpoint: int
    runs: str


@dataclass(frozen=True)
class PairedEstimate:
    baseline: str
    endpoint: str
    level: float
    stage: int
    metric: str                   # catalogue key (ttft_p50, ...)
    name: str                     # TTFT, ...
    stat: PairedStat
    verdict: str


@dataclass(frozen=True)
class PairedResult:
    counts: list[PairCount] = field(default_factory=list)
    estimates: list[PairedEstimate] = field(default_factory=list)
    reason: str = ""              # why there is nothing to show ("" when there is)
    mode: str = "closed"

    def counts_frame(self) -> pd.DataFrame:
        cols = [f.name for f in PairCount.__dataclass_fields__.values()]
        return pd.DataFrame([c.__dict__ for c in self.counts], columns=cols)

    def estimates_frame(self) -> pd.DataFrame:
        rows = []
        for e in self.estimates:
            s = e.stat
            rows.append({"level": e.level, "stage": e.stage, "metric": e.metric,
                         "name": e.name, "baseline": e.baseline, "endpoint": e.endpoint,
                         "pairs": s.n_pairs, "repetitions": s.n_reps, "ratio": s.ratio,
                         "change_pct": s.change_pct, "ci_low_pct": s.ci_low_pct,
                         "ci_high_pct": s.ci_high_pct, "mean_diff_ms": s.mean_diff_ms,
                         "mean_diff_ci_low_ms": s.mean_diff_ci_low_ms,
                         "mean_diff_ci_high_ms": s.mean_diff_ci_high_ms,
                         "real": "n/a" if s.real is None else ("yes" if s.real else "no"),
                         "ci_covers": s.scope, "verdict": e.verdict})
        cols = ["level", "stage", "metric", "name", "baseline", "endpoint", "pairs",
                "repetitions", "ratio", "change_pct", "ci_low_pct", "ci_high_pct",
                "mean_diff_ms", "mean_diff_ci_low_ms", "mean_diff_ci_high_ms", "real",
                "ci_covers", "verdict"]
        return pd.DataFrame(rows, columns=cols)


def analyse_paired(runs: list[RunRequests], endpoints: list[str], baseline: str, *,
                   seed: int = 0, n_boot: int = 1000) -> PairedResult:
    """Pair every endpoint with the baseline, repetition by repetition; one estimate per
    endpoint, level and paired metric, pooled over the repetitions."""
    mode = runs[0].mode if runs else "closed"
    if len(endpoints) < 2:
        return PairedResult(reason="One endpoint only: nothing to pair.", mode=mode)
    if not any(len(r.keyed) for r in runs):
        return PairedResult(reason="No request_key in these runs' records (runs made before "
                            "pairing existed): nothing to pair; see Comparison for the "
                            "unpaired test.", mode=mode)
    metrics = paired_metrics()
    stages = pair_runs(runs, endpoints, baseline, metrics.values())
    counts = [PairCount(s.baseline, s.endpoint, s.repetition, s.stage, s.level, s.n_pairs,
                        s.unpaired_baseline, s.unpaired_endpoint, s.blank_baseline,
                        s.blank_endpoint, ", ".join(s.runs)) for s in stages]
    estimates: list[PairedEstimate] = []
    by: dict[tuple[str, float, int], list[PairedStage]] = {}
    for s in stages:
        if s.n_pairs:
            by.setdefault((s.endpoint, s.level, s.stage), []).append(s)
    order = {ep: i for i, ep in enumerate(endpoints)}
    for (ep, level, stage), group in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][2],
                                                                        order.get(kv[0][0], 0))):
        for key, col in metrics.items():
            reps = [(g.pairs[f"{col}_a"].to_numpy(float), g.pairs[f"{col}_b"].to_numpy(float))
                    for g in group]
            st = paired_compare(reps, n_boot=n_boot,
                                seed=seed_for(seed, "paired", baseline, ep, level, key))
            if not st.n_pairs:
                continue
            name = metric_name(key)
            estimates.append(PairedEstimate(
                baseline, ep, level, stage, key, name, st,
                paired_verdict(ep, name, st, METRICS[key].lower_is_better, baseline)))
    reason = ""
    if not estimates:
        reason = (f"The runs carry request keys, but no completed steady request of "
                  f"{', '.join(e for e in endpoints if e != baseline)} shares a (repetition, "
                  f"stage, request_key) with {baseline}'s: nothing to pair.")
    return PairedResult(counts, estimates, reason, mode)
