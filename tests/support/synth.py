"""Synthetic run directories (core.rundir layout) with known values, for tests and the bench.

``write_run`` writes exactly the frames it is given (fills the record fields not given);
``synth_run`` generates a plausible closed-loop sweep with metric samples, vectorised so that a
million records take seconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from core.rundir import (METRIC_FIELDS, RECORD_DEFAULTS, RECORD_FIELDS, SCHEMA_VERSION,
                         STAGE_FIELDS, ErrorCategory, Host, LoadGeneratorSummary, Manifest,
                         RunStatus, Versions, series)

T0 = 1_760_000_000.0
_DEFAULTS = RECORD_DEFAULTS


def make_config(labels: Iterable[str] = ("A", "B"), *, models: dict[str, str] | None = None,
                stages=(1, 4), ramp_s=1.0, warmup_s=2.0, steady_s=10.0, drain_s=1.0,
                mode="closed", repetitions=1, metrics=True, max_tokens=128) -> dict[str, Any]:
    models = models or {}
    eps = []
    for i, label in enumerate(labels):
        eps.append({
            "label": label, "base_url": f"http://127.0.0.1:{8101 + i}/v1",
            "model": models.get(label, f"model-{label}"), "api_key_env": "", "extra_body": {},
            "request": {"max_tokens": max_tokens, "temperature": 0.5, "ignore_eos": True,
                        "connect_timeout_s": 10.0, "read_timeout_s": 120.0},
            "metrics_url": f"http://127.0.0.1:{8101 + i}/metrics" if metrics else "",
            "exporter_url": f"http://127.0.0.1:{9411 + i}/metrics" if metrics else "",
        })
    load = {"mode": mode, "stages": list(stages), "rates": [1.0, 2.0, 4.0], "ramp_s": ramp_s,
            "warmup_s": warmup_s, "steady_s": steady_s, "drain_s": drain_s,
            "repetitions": repetitions, "input_tokens": 64, "prompt_seed": 0, "prompts_file": "",
            "client": "fast", "max_in_flight": 1024}
    return {"endpoints": eps, "load": load, "source": "synthetic"}


def make_manifest(run_id: str, config: dict[str, Any], *, endpoints: Iterable[str] | None = None,
                  repetition=1, start_unix=T0, end_unix=None, status="complete",
                  saturated=False, records_written: int | None = None,
                  locust_requests: int | None = None, campaign="test",
                  schema_version=SCHEMA_VERSION) -> dict[str, Any]:
    """A manifest as JSON (a dict the tests may edit), made through core.rundir.Manifest."""
    return Manifest(
        schema_version=schema_version, run_id=run_id, campaign=campaign,
        endpoints=list(endpoints or [e["label"] for e in config["endpoints"]]),
        repetition=repetition, start_unix=start_unix, end_unix=end_unix,
        status=status, config=config,
        versions=Versions(suite="0.1.0", locust="2.47.0", python="3.11.7"),
        host=Host(hostname="loadgen-1", platform="Linux-x86_64", cpu_count=2),
        load_generator=LoadGeneratorSummary(max_cpu_percent=97.0 if saturated else 35.0,
                                            seconds_above_90=30.0 if saturated else 0.0,
                                            saturated=saturated),
        records_written=records_written, locust_requests=locust_requests,
    ).to_json()


def stage_rows(stages, *, start=T0, ramp_s=1.0, warmup_s=2.0, steady_s=10.0, drain_s=1.0,
               mode="closed") -> list[dict[str, Any]]:
    rows, t = [], start
    for i, s in enumerate(stages):
        rows.append({"stage": i, "users": s if mode == "closed" else 0,
                     "rate": s if mode == "open" else "", "ramp_unix": t,
                     "warmup_unix": t + ramp_s, "steady_unix": t + ramp_s + warmup_s,
                     "drain_unix": t + ramp_s + warmup_s + steady_s,
                     "end_unix": t + ramp_s + warmup_s + steady_s + drain_s})
        t += ramp_s + warmup_s + steady_s + drain_s
    return rows


def records_frame(rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """A records frame with every RECORD_FIELDS column (defaults for the ones not given)."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    n = len(df)
    for f in RECORD_FIELDS:
        if f not in df:
            df[f] = [_DEFAULTS[f]] * n if n else pd.Series(dtype=object)
    return df[list(RECORD_FIELDS)]


def write_run(run_dir: Path, *, manifest: dict[str, Any], records: pd.DataFrame | list | None,
              stages: list[dict] | pd.DataFrame | None, metrics: pd.DataFrame | list | None = None,
              locust_chat: dict[str, int] | None | str = "auto", nan_as="") -> Path:
    """Write a run directory. locust_chat: CHAT request counts per endpoint ("auto": from records)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rec = None
    if records is not None:
        rec = records_frame(records)
        rec.to_csv(run_dir / "records.csv", index=False, na_rep=nan_as)
        if manifest.get("records_written") is None:
            manifest["records_written"] = len(rec)
    if stages is not None:
        pd.DataFrame(stages, columns=list(STAGE_FIELDS)).to_csv(run_dir / "stages.csv",
                                                                index=False)
    if metrics is not None:
        m = metrics if isinstance(metrics, pd.DataFrame) else pd.DataFrame(metrics,
                                                                            columns=METRIC_FIELDS)
        m[list(METRIC_FIELDS)].to_csv(run_dir / "metrics.csv", index=False)
    if locust_chat == "auto" and rec is not None:
        locust_chat = {str(k): int(v) for k, v in rec.groupby("endpoint").size().items()}
    if isinstance(locust_chat, dict):
        rows = []
        for ep, n in locust_chat.items():
            rows.append({"Type": "CHAT", "Name": ep, "Request Count": n, "Failure Count": 0})
            rows.append({"Type": "TTFT", "Name": ep, "Request Count": n, "Failure Count": 0})
        rows.append({"Type": "", "Name": "Aggregated",
                     "Request Count": 2 * sum(locust_chat.values()), "Failure Count": 0})
        pd.DataFrame(rows).to_csv(run_dir / "locust_stats.csv", index=False)
        if manifest.get("locust_requests") is None:
            manifest["locust_requests"] = sum(locust_chat.values())
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return run_dir


# ---------------------------------------------------------------------------------------------
# Generated sweeps

@dataclass
class Profile:
    """How a synthetic endpoint behaves; latencies grow with concurrency."""

    model: str = "model"
    ttft_ms: float = 50.0          # median TTFT at 1 user
    ttft_per_user_ms: float = 3.0  # added per concurrent user
    tpot_ms: float = 10.0
    output_tokens: int = 128
    error_rate: float = 0.0
    gpu: bool = True
    util_at_1: float = 0.45        # NVML utilization ratio at 1 user
    mem_gib: float = 8.0
    power_w: float = 120.0
    reasoning_tokens: int = 0
    rps_scale: float = 1.0         # multiplies the closed-loop request rate


@dataclass
class SynthSpec:
    profiles: dict[str, Profile] = field(default_factory=lambda: {
        "A": Profile(model="qwen2.5"), "B": Profile(model="qwen3", ttft_ms=35.0, tpot_ms=7.0,
                                                   util_at_1=0.5, mem_gib=6.5)})
    stages: tuple = (1, 4, 8, 16, 32)
    ramp_s: float = 2.0
    warmup_s: float = 3.0
    steady_s: float = 20.0
    drain_s: float = 2.0
    repetition: int = 1
    seed: int = 0
    metrics: bool = True
    histogram_buckets: tuple = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                                2.5, 5.0, 10.0)
    metric_gaps: list = field(default_factory=list)   # (endpoint, source, t_from_s, t_to_s)
    saturated: bool = False
    all_histograms: bool = False   # also ITL and E2E histograms (bigger metrics.csv)
    start_unix: float = T0
    campaign: str = "synthetic"


def _level_factor(users: float) -> float:
    return math.log2(users) + 1.0


def synth_run(run_dir: Path, spec: SynthSpec | None = None, *, run_id: str | None = None) -> dict:
    """Generate and write one run of a closed-loop sweep over spec.stages for every profile."""
    spec = spec or SynthSpec()
    rng = np.random.default_rng(spec.seed)
    labels = list(spec.profiles)
    run_id = run_id or Path(run_dir).name
    stages = stage_rows(spec.stages, start=spec.start_unix, ramp_s=spec.ramp_s,
                        warmup_s=spec.warmup_s, steady_s=spec.steady_s, drain_s=spec.drain_s)
    frames = []
    for label, p in spec.profiles.items():
        for st in stages:
            users = st["users"]
            ttft_med = (p.ttft_ms + p.ttft_per_user_ms * (users - 1)) / 1000.0
            e2e_typ = ttft_med + p.tpot_ms / 1000.0 * (p.output_tokens - 1)
            rate = users / e2e_typ * p.rps_scale
            span = st["end_unix"] - st["ramp_unix"]
            n = int(rate * span)
            if n == 0:
                continue
            start = st["ramp_unix"] + (np.arange(n) + rng.random(n)) / rate
            ttft = ttft_med * rng.lognormal(0.0, 0.25, n)
            tpot = p.tpot_ms / 1000.0 * rng.lognormal(0.0, 0.1, n)
            e2e = ttft + tpot * (p.output_tokens - 1)
            ok = rng.random(n) >= p.error_rate
            phase = np.select(
                [start < st["warmup_unix"], start < st["steady_unix"], start < st["drain_unix"]],
                ["ramp", "warmup", "steady"], "drain")
            out_tok = np.where(ok, float(p.output_tokens), np.nan)
            frames.append(pd.DataFrame({
                "run_id": run_id, "endpoint": label, "model": p.model,
                "repetition": spec.repetition, "stage": st["stage"], "stage_users": users,
                "phase": phase, "worker": "local:1", "client": "fast", "start_unix": start,
                "scheduled_unix": np.nan, "send_lag_s": np.nan,
                "ttft_s": np.where(ok, ttft, np.nan),
                "ttfat_s": np.where(ok, ttft + (p.reasoning_tokens * tpot), np.nan),
                "e2e_s": np.where(ok, e2e, np.nan), "tpot_s": np.where(ok, tpot, np.nan),
                "chunks": np.where(ok, p.output_tokens, 0),
                "reasoning_chunks": np.where(ok, p.reasoning_tokens, 0),
                "answer_chunks": np.where(ok, p.output_tokens - p.reasoning_tokens, 0),
                "prompt_tokens": 64.0, "output_tokens": out_tok,
                "reasoning_tokens": np.where(ok, float(p.reasoning_tokens), np.nan),
                "answer_tokens": out_tok - np.where(ok, float(p.reasoning_tokens), np.nan),
                "tokens_from_usage": True,
                "itl_mean_s": np.where(ok, tpot, np.nan), "itl_p50_s": np.where(ok, tpot, np.nan),
                "itl_p99_s": np.where(ok, tpot * 1.5, np.nan),
                "itl_max_s": np.where(ok, tpot * 2, np.nan),
                "http_status": 200, "ok": ok,
                "error_category": np.where(ok, "", ErrorCategory.STREAM_ERROR.value),
                "error_message": np.where(ok, "", "engine failed"),
            }))
    records = pd.concat(frames, ignore_index=True).sort_values("start_unix", kind="stable")
    end = stages[-1]["end_unix"]
    config = make_config(labels, models={k: v.model for k, v in spec.profiles.items()},
                         stages=spec.stages, ramp_s=spec.ramp_s, warmup_s=spec.warmup_s,
                         steady_s=spec.steady_s, drain_s=spec.drain_s, metrics=spec.metrics)
    manifest = make_manifest(run_id, config, repetition=spec.repetition,
                             start_unix=spec.start_unix, end_unix=end, saturated=spec.saturated,
                             campaign=spec.campaign)
    metrics = synth_metrics(spec, stages, records, rng) if spec.metrics else None
    write_run(run_dir, manifest=manifest, records=records, stages=stages, metrics=metrics)
    return {"run_dir": Path(run_dir), "records": len(records), "stages": stages,
            "metric_rows": 0 if metrics is None else len(metrics)}


def synth_metrics(spec: SynthSpec, stages: list[dict], records: pd.DataFrame,
                  rng: np.random.Generator) -> pd.DataFrame:
    """1 s samples: exporter (NVML) and server (vLLM gauges, counters, histograms) per endpoint."""
    t_start, t_end = stages[0]["ramp_unix"], stages[-1]["end_unix"]
    ts = np.arange(t_start, t_end, 1.0) + 0.25
    n = ts.size
    stage_idx = np.searchsorted([s["ramp_unix"] for s in stages], ts, side="right") - 1
    users = np.array([stages[i]["users"] for i in stage_idx], dtype=float)
    cols: dict[str, list] = {c: [] for c in METRIC_FIELDS}

    def add(t, ep, src, metric, labels, values):
        k = np.size(t)
        cols["ts_unix"].append(np.broadcast_to(t, k))
        cols["endpoint"].append(np.broadcast_to(np.array(ep, dtype=object), k))
        cols["source"].append(np.broadcast_to(np.array(src, dtype=object), k))
        cols["metric"].append(np.broadcast_to(np.array(metric, dtype=object), k))
        cols["labels"].append(np.broadcast_to(np.array(labels, dtype=object), k))
        cols["value"].append(np.broadcast_to(values, k).astype(float))

    buckets = np.array(spec.histogram_buckets)
    for label, p in spec.profiles.items():
        up = {"exporter": np.ones(n, bool), "server": np.ones(n, bool)}
        for ep, src, a, b in spec.metric_gaps:
            if ep == label:
                up[src] &= ~((ts - t_start >= a) & (ts - t_start < b))
        r = records[records["endpoint"] == label]
        done_t = (r["start_unix"] + r["e2e_s"].fillna(0)).to_numpy()
        sec = np.clip(((done_t - t_start) // 1).astype(np.int64), 0, n - 1)
        done_ok = r["ok"].to_numpy()
        toks = np.bincount(sec[done_ok], weights=r["output_tokens"].to_numpy()[done_ok],
                           minlength=n)
        fsec = sec[done_ok]
        hists = {}
        for family, col in ((series.VLLM_TTFT, "ttft_s"), (series.VLLM_ITL, "itl_mean_s"),
                            (series.VLLM_E2E, "e2e_s")):
            if family != series.VLLM_TTFT and not spec.all_histograms:
                continue
            vals = r[col].to_numpy()[done_ok]
            bidx = np.searchsorted(buckets, vals, side="left")  # le bucket index
            hist = np.zeros((n, buckets.size + 1))
            np.add.at(hist, (fsec, bidx), 1.0)
            hists[family] = (np.cumsum(np.cumsum(hist, axis=1), axis=0),  # cumulative le, time
                             np.cumsum(np.bincount(fsec, weights=vals, minlength=n)),
                             np.cumsum(np.bincount(fsec, minlength=n)).astype(float))
        util = np.clip(p.util_at_1 * (1 + 0.25 * np.log2(users)), 0, 1)
        util = np.clip(util + rng.normal(0, 0.01, n), 0, 1)
        power = p.power_w * (0.6 + 0.4 * util)
        energy = 5000.0 + np.cumsum(power)
        gl = 'gpu="0",UUID="GPU-00000000-0000-0000-0000-000000000000"'
        e = up["exporter"]
        X, S = series.EXPORTER, series.SERVER
        add(ts, label, X, series.SCRAPE_UP, np.where(e, "", 'error="connection refused"'),
            e.astype(float))
        if p.gpu:
            add(ts[e], label, X, series.NVML_UP, "", 1.0)
            add(ts[e], label, X, series.GPU_UTILIZATION, gl, util[e])
            add(ts[e], label, X, series.GPU_SM_ACTIVE, gl, util[e] * 0.6)
            add(ts[e], label, X, series.GPU_MEMORY_USED, gl, p.mem_gib * 2 ** 30)
            add(ts[e], label, X, series.GPU_MEMORY_TOTAL, gl, 16.0 * 2 ** 30)
            add(ts[e], label, X, series.GPU_POWER, gl, power[e])
            add(ts[e], label, X, series.GPU_ENERGY, gl, energy[e])
        else:
            sel = 'selector="vllm"'
            add(ts[e], label, X, series.PROCESS_CPU, sel,
                100.0 + np.cumsum(np.minimum(users, 2.0) * 0.9)[e])
            add(ts[e], label, X, series.PROCESS_RSS, sel, p.mem_gib * 2 ** 30)
        s = up["server"]
        add(ts, label, S, series.SCRAPE_UP, np.where(s, "", 'error="timeout"'), s.astype(float))
        ml = f'model_name="{p.model}"'
        add(ts[s], label, S, series.VLLM_RUNNING, ml, users[s])
        add(ts[s], label, S, series.VLLM_WAITING, ml, 0.0)
        add(ts[s], label, S, series.VLLM_KV_CACHE_USAGE, ml, (0.01 * users)[s])
        add(ts[s], label, S, series.VLLM_GENERATION_TOKENS, ml, np.cumsum(toks)[s])
        for base, (cum_b, h_sum, h_cnt) in hists.items():
            for j, le in enumerate(list(buckets) + [math.inf]):
                le_text = "+Inf" if math.isinf(le) else f"{le:g}"
                add(ts[s], label, S, f"{base}_bucket", f'{ml},le="{le_text}"',
                    cum_b[s, j])
            add(ts[s], label, S, f"{base}_sum", ml, h_sum[s])
            add(ts[s], label, S, f"{base}_count", ml, h_cnt[s])
    return pd.DataFrame({c: np.concatenate(v) for c, v in cols.items()})


# ---------------------------------------------------------------------------------------------
# Runs stopped early, and failure storms

def interrupt_run(run_dir: Path, at_unix: float) -> Path:
    """Rewrite a finished run directory as the load generator finalizes one stopped early
    (Ctrl-C/SIGTERM) at ``at_unix``: manifest status "interrupted" with interrupted_unix;
    stages.csv ends with the partial stage (end_unix = the interrupt, phases not reached
    blank); records started later are gone, streams cut by the stop fail as "interrupted"."""
    run_dir = Path(run_dir)
    stages = pd.read_csv(run_dir / "stages.csv")
    stages = stages[stages["ramp_unix"] < at_unix].copy()
    last = stages.index[-1]
    for col in ("warmup_unix", "steady_unix", "drain_unix"):
        if stages.at[last, col] >= at_unix:
            stages.at[last, col] = math.nan          # written blank
    stages.at[last, "end_unix"] = at_unix
    stages[list(STAGE_FIELDS)].to_csv(run_dir / "stages.csv", index=False, na_rep="")
    rec = pd.read_csv(run_dir / "records.csv", keep_default_na=False, na_values=[""])
    rec = rec[rec["start_unix"] < at_unix].copy()
    cut = (rec["start_unix"] + rec["e2e_s"].fillna(0.0)) > at_unix
    for col in ("error_category", "error_message"):
        rec[col] = rec[col].astype(object).where(rec[col].notna(), "")
    rec.loc[cut, "ok"] = False
    rec.loc[cut, "error_category"] = ErrorCategory.INTERRUPTED.value
    rec.loc[cut, "error_message"] = "the run was stopped"
    rec.loc[cut, "e2e_s"] = at_unix - rec.loc[cut, "start_unix"]
    rec.to_csv(run_dir / "records.csv", index=False, na_rep="")
    m = Manifest.from_json(json.loads((run_dir / "manifest.json").read_text()))
    m.status, m.interrupted_unix, m.end_unix = RunStatus.INTERRUPTED, at_unix, at_unix + 0.5
    m.records_written = m.locust_requests = len(rec)
    (run_dir / "manifest.json").write_text(json.dumps(m.to_json(), indent=2))
    if (run_dir / "locust_stats.csv").is_file():
        (run_dir / "locust_stats.csv").unlink()
    return run_dir


def storm_records(*, endpoint: str = "A", t_from: float, t_to: float, every_s: float,
                  ok_from: float, ok_to: float, ok_every_s: float, stage: int = 0,
                  users: int = 4, category: str = ErrorCategory.CONNECTION_REFUSED.value,
                  fail_e2e_s: float = 0.0005) -> list[dict[str, Any]]:
    """Steady records of one endpoint: successes every ok_every_s in [ok_from, ok_to) except
    during [t_from, t_to), where requests fail every every_s (clients retrying quickly)."""
    rows = []
    for t in np.arange(ok_from, ok_to, ok_every_s):
        if t_from <= t < t_to:
            continue
        rows.append({"endpoint": endpoint, "model": f"model-{endpoint}", "stage": stage,
                     "stage_users": users, "phase": "steady", "start_unix": T0 + float(t),
                     "ttft_s": 0.05, "ttfat_s": 0.05, "e2e_s": 0.2, "tpot_s": 0.01,
                     "output_tokens": 16.0, "reasoning_tokens": 0.0, "answer_tokens": 16.0,
                     "itl_mean_s": 0.01, "itl_max_s": 0.02, "tokens_from_usage": True,
                     "http_status": 200, "ok": True})
    for t in np.arange(t_from, t_to, every_s):
        rows.append({"endpoint": endpoint, "model": f"model-{endpoint}", "stage": stage,
                     "stage_users": users, "phase": "steady", "start_unix": T0 + float(t),
                     "e2e_s": fail_e2e_s, "http_status": 0, "ok": False,
                     "error_category": category, "error_message": "connection refused"})
    rows.sort(key=lambda r: r["start_unix"])
    return rows
