"""When an endpoint was down: failures read as time, not only as a share of requests.

Clients retry a down endpoint quickly (a refused connection fails in about a millisecond), so an
endpoint down for 4 s of an 8 s window gives thousands of failed records: the per-request error
rate reads ~99% while throughput only halved. The report keeps that rate and adds, per time,
failures per second and the seconds (and share) of the steady window during which the endpoint
was down, from the down windows defined here (``down_windows``: the one definition).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.rundir import ErrorCategory

MIN_DOWN_S = 1.0            # a down window lasts at least this long
# stopped by the load generator, not answered (plain strings: compared with np.isin)
IGNORED_CATEGORIES = (ErrorCategory.INTERRUPTED.value,)

DOWN_WINDOW_DEFINITION = (
    "A maximal span of time in which an endpoint's requests ended and none succeeded, lasting "
    f"at least {MIN_DOWN_S:g} s: the endpoint's requests in the order they ended (start_unix + "
    "e2e_s; start_unix where E2E is unknown), split at every success; each run of consecutive "
    "failures spans from its first failure's end to its last failure's end. Requests failed as "
    "'interrupted' (stopped by the load generator) are left out. Failures are ordered by when "
    "they ended because that is when the endpoint was seen failing: streams cut by a crash "
    "started before it. Shorter runs are single errors or one burst (several requests failing "
    "together when one connection breaks), which the error rate already counts; 1 s is also "
    "the resolution of the time series and of metric scrapes. Start is seconds since the run's "
    "start_unix.")


def down_windows(start_unix: np.ndarray, e2e_s: np.ndarray, ok: np.ndarray,
                 category: np.ndarray, min_s: float = MIN_DOWN_S) -> pd.DataFrame:
    """The down windows of one endpoint's requests (one run, every phase).

    Rule (see DOWN_WINDOW_DEFINITION, printed in the report's Definitions):
    - each request's end is start_unix + e2e_s, or start_unix where e2e_s is unknown (NaN);
      requests whose category is 'interrupted' are left out: the load generator stopped them,
      so they say nothing about the endpoint;
    - the requests are ordered by end; every success splits the sequence; each maximal run of
      consecutive failures spans [its first end, its last end];
    - a span lasting at least ``min_s`` (1 s) is a down window. Why 1 s: shorter runs are a
      single error or one burst of failures at one instant (a broken connection failing the
      requests it carried), which the per-request error rate already counts; an outage that
      matters lasts longer, and 1 s is the resolution of the time series and metric scrapes.
    - why by end, not by start: a crash fails the streams in flight, which started up to one
      E2E before it; ordered by start, the window would begin that much too early.

    Returns one row per window: start_unix, end_unix, duration_s, failures (failed requests in
    the run of failures), error_category (the most frequent; ties: alphabetical).
    """
    cols = ["start_unix", "end_unix", "duration_s", "failures", "error_category"]
    start = np.asarray(start_unix, dtype=float)
    if start.size == 0:
        return pd.DataFrame(columns=cols)
    e2e = np.asarray(e2e_s, dtype=float)
    good = np.asarray(ok, dtype=bool)
    cat = np.asarray(category).astype(str)
    end = np.where(np.isfinite(e2e) & (e2e >= 0), start + e2e, start)
    keep = np.isfinite(end) & ~np.isin(cat, IGNORED_CATEGORIES)
    end, good, cat = end[keep], good[keep], cat[keep]
    order = np.argsort(end, kind="stable")
    end, failed, cat = end[order], ~good[order], cat[order]
    edges = np.diff(np.concatenate([[0], failed.astype(np.int8), [0]]))
    first = np.flatnonzero(edges == 1)        # first failure of each run
    stop = np.flatnonzero(edges == -1)        # one past its last failure
    if not first.size:
        return pd.DataFrame(columns=cols)
    t0, t1 = end[first], end[stop - 1]
    long = (t1 - t0) >= min_s
    rows = []
    for i0, i1, a, b in zip(first[long], stop[long], t0[long], t1[long]):
        names, counts = np.unique(cat[i0:i1], return_counts=True)
        dominant = str(names[np.argmax(counts)]) or "unknown"
        rows.append({"start_unix": float(a), "end_unix": float(b), "duration_s": float(b - a),
                     "failures": int(i1 - i0), "error_category": dominant})
    return pd.DataFrame(rows, columns=cols)


def run_down_windows(records: pd.DataFrame, origin_unix: float) -> pd.DataFrame:
    """Down windows of every endpoint of one run's records, start_s relative to origin_unix."""
    frames = []
    if len(records) and (~records["ok"]).any():
        for ep, r in records.groupby("endpoint", observed=True, sort=False):
            if r["ok"].all():
                continue
            w = down_windows(r["start_unix"].to_numpy(), r["e2e_s"].to_numpy(),
                             r["ok"].to_numpy(), r["error_category"].astype(str).to_numpy())
            if len(w):
                w.insert(0, "endpoint", str(ep))
                frames.append(w)
    cols = ["endpoint", "start_s", "start_unix", "end_unix", "duration_s", "failures",
            "error_category"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    out["start_s"] = out["start_unix"] - origin_unix
    return out[cols].sort_values(["start_unix", "endpoint"], kind="stable").reset_index(drop=True)


def down_seconds(windows: pd.DataFrame, t0: float, t1: float) -> float:
    """Seconds of [t0, t1) covered by the windows (one endpoint's: they do not overlap)."""
    if not len(windows) or not t1 > t0:
        return 0.0
    a = np.maximum(windows["start_unix"].to_numpy(float), t0)
    b = np.minimum(windows["end_unix"].to_numpy(float), t1)
    return float(np.clip(b - a, 0.0, None).sum())
