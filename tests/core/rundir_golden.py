"""The golden run directory: make run directories the way the suite does, and normalize them.

Two scenarios, each written by the code of the checkout it runs in (``root``):

- ``det``: in a fresh Python process (Locust imported, no users, no runner), the master's
  ``RunWriter`` is fed fixed records, stage rows, CPU and loop-lag samples and is finalized as
  ``interrupted`` (``det/interrupted``, with the manifest as first written kept beside it) and as
  ``failed`` with a credential in its ``failure_reason`` (``det/failed``: the scrubbing).
  Everything but the clock, the host and the versions is fixed, so records.csv and stages.csv
  are compared byte for byte, line endings included.
- ``locust``: a real campaign (``python -m locustfiles.campaign``, preflight included, one
  stage, local runner) against the stub server, with ``metrics_url`` on the stub's /metrics and
  ``exporter_url`` on a fake-GPU exporter that also watches the stub's process: every file of the
  campaign folder and its run directory, metrics.csv included.

``normalize(tree, root)`` turns a produced folder into {relative path: text}. It masks what
varies from run to run and keeps everything that is the format:

- masked: times (``*_unix``, ``started_unix``/``ended_unix``), latencies and other per-request
  measurements of the real run (``RECORD_FLOAT_MASKS``: a number becomes ``<f>``, while ``nan``
  and blank stay), request ids (``<id>``) and keys (``<key>``), phases of the real run (``<phase>``, checked to be a
  known one), hosts and pids (``<HOST>:<PID>``, ``pid:<PID>``), ports, the campaign folder's
  time stamp, paths (``<OUT>``, ``<ROOT>``, ``<VENV>``), the host and the versions (suite,
  Python, Locust) in the manifest, record counts and CPU figures (the key stays, the value becomes its
  JSON type: ``"<int>"``, ``"<float>"``...; null stays null), failed scrapes in metrics.csv, the
  contents of logs, and the number of rows of CSV files whose row count varies (their distinct
  normalized rows are kept);
- kept: file names, every CSV header line as written (order, line endings), manifest keys at
  every depth and their value types, ``schema_version``, the config, the
  plan, the stage rows, the metric names and label names (and label values that do not vary),
  Locust's own CSV headers and row names, and whether each JSON file is written canonically
  (indent 2, sorted keys, newline at the end).

Regenerate the fixtures from a checkout (for the committed baseline: a worktree of it)::

    cd <checkout> && PYTHONPATH=<checkout> python <this file> --root <checkout> \
        --write <this repo>/tests/core/golden
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"

# ---------------------------------------------------------------------------------------------
# Producing

T0 = 1_760_000_000.0


def _det_script(out: Path) -> str:
    """The deterministic scenario, run in a fresh interpreter (Locust monkey-patches on import)."""
    return f"""
import locust  # noqa: F401  (monkey-patches first, as in a Locust process)
import json, math
from pathlib import Path
from types import SimpleNamespace

from core.config import load_config
from core.records import RECORD_FIELDS, RequestRecord
from locustfiles.messages import RecordBatch
from locustfiles.writer import RunWriter, build_manifest
from locustfiles.plan import build_plan

out = Path({str(out)!r})
cfg_path = out / "endpoints.json"
cfg_path.write_text(json.dumps({{
    "request": {{"max_tokens": 16, "read_timeout_s": 10.0, "connect_timeout_s": 3.0}},
    "load": {{"stages": [2, 4], "ramp_s": 0.5, "warmup_s": 1.0, "steady_s": 2.0, "drain_s": 1.0,
              "repetitions": 1, "prompt_words": 12}},
    "endpoints": [{{"label": "A", "base_url": "http://127.0.0.1:8101/v1", "model": "m-a",
                    "api_key_env": "KEY_A", "metrics_url": "http://127.0.0.1:8101/metrics",
                    "extra_body": {{"chat_template_kwargs": {{"enable_thinking": True}}}}}}]}}))
config = load_config(cfg_path)
ctx = SimpleNamespace(campaign="golden", repetition=1, config=config, plan=build_plan(config.load))
Chat_A = type("Chat_A", (), {{"endpoint_label": "A"}})
env = SimpleNamespace(user_classes=[Chat_A], shape_class=object)
T0 = {T0!r}
NAN = math.nan

def rec(**kw):
    base = dict(run_id="interrupted", endpoint="A", model="m-a", repetition=1, stage=0,
                stage_users=2, phase="steady", worker="host-1:4242", client="fast")
    base.update(kw)
    r = RequestRecord(**base)
    return [getattr(r, name) for name in RECORD_FIELDS]

rows = [
    rec(request_id="1a-1", start_unix=T0 + 1.25, send_stamp="kernel", presend_s=0.000125,
        scheduled_unix=T0 + 1.2, send_lag_s=0.05, requested_tokens=16, ttft_s=0.0123456789,
        ttfat_s=0.02, e2e_s=0.25, tpot_s=0.0151234, chunks=16, reasoning_chunks=4,
        answer_chunks=12, prompt_tokens=64.0, output_tokens=16.0, reasoning_tokens=4.0,
        answer_tokens=12.0, tokens_from_usage=True, itl_mean_s=0.015, itl_p50_s=0.0149,
        itl_p99_s=0.03, itl_max_s=0.031, http_status=200, ok=True),
    rec(request_id="1a-2", start_unix=T0 + 2.5, requested_tokens=16, ttft_s=0.5, e2e_s=0.75,
        chunks=3, answer_chunks=3, output_tokens=3.0, reasoning_tokens=0.0, answer_tokens=3.0,
        itl_mean_s=0.1, itl_p50_s=0.1, itl_p99_s=0.1, itl_max_s=0.1, http_status=200,
        error_category="stream_truncated",
        error_message='the stream ended, "quoted", a newline\\nand ünïcode'),
    rec(request_id="1a-3", start_unix=T0 + 3.0, phase="drain", requested_tokens=16,
        error_category="connection_refused", error_message="connection refused ([Errno 111])"),
    rec(request_id="1a-4", start_unix=T0 + 3.5, stage=1, stage_users=4, phase="ramp",
        requested_tokens=16, http_status=503, error_category="http_5xx",
        error_message="HTTP 503: overloaded"),
    rec(request_id="1a-5", start_unix=T0 + 4.0, stage=-1, stage_users=3, phase="manual",
        client="openai", requested_tokens=0, http_status=200, error_category="interrupted",
        error_message="stopped while streaming"),
]

# An interrupted run: two batches from one process, a whole stage and a partial one.
run_dir = out / "interrupted"
writer = RunWriter(run_dir, build_manifest(ctx, env, run_dir))
(out / "interrupted.running-manifest.json").write_text((run_dir / "manifest.json").read_text())
writer.on_batch(RecordBatch.from_payload({{"worker": "host-1:4242", "rows": rows[:2],
                 "cpu": {{"max_cpu_percent": 41.5, "seconds_above_90": 0.0}},
                 "loop_lag": {{"0": [0.001, 0.0025, 0.0005]}}, "final": False}}))
writer.write_stage({{"stage": 0, "users": 2, "rate": 0.0, "ramp_unix": T0, "warmup_unix": T0 + 0.5,
                    "steady_unix": T0 + 1.5, "drain_unix": T0 + 3.5, "end_unix": T0 + 4.5}})
writer.on_batch(RecordBatch.from_payload({{"worker": "host-1:4242", "rows": rows[2:],
                 "cpu": {{"max_cpu_percent": 97.5, "seconds_above_90": 3.0, "cpu_seconds": 2.125}},
                 "loop_lag": {{"0": [0.004], "1": [0.0001, 0.0002]}}, "final": True}}))
writer.write_stage({{"stage": 1, "users": 4, "rate": 0.0, "ramp_unix": T0 + 4.5,
                    "warmup_unix": T0 + 5.0, "end_unix": T0 + 5.25}})
writer.finalize("interrupted", 5, interrupted_unix=T0 + 5.25)

# A run that recorded nothing: failed, with a credential in its reason (scrubbed).
run_dir = out / "failed"
writer = RunWriter(run_dir, build_manifest(ctx, env, run_dir))
writer.on_batch(RecordBatch.from_payload({{"worker": "host-1:4243", "rows": [], "cpu": {{"max_cpu_percent": 1.0,
                 "seconds_above_90": 0.0, "cpu_seconds": 0.5}}, "loop_lag": {{}}, "final": True}}))
writer.finalize("failed", 0, failure_reason="no request was recorded (Authorization: Bearer "
                "sk-golden0123456789abcdefghij)")
"""


def produce_det(root: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", _det_script(out)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"deterministic scenario failed:\n{proc.stdout}\n{proc.stderr}")
    (out / "endpoints.json").unlink()


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout} s")
        time.sleep(0.2)


def produce_locust(root: Path, out: Path) -> None:
    """A one-stage campaign against the stub, with its /metrics and a fake-GPU exporter."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(root)}
    sys.path.insert(0, str(root))
    try:
        from bench.netutil import free_port
        from bench.stub_server import run_stub_process, stop_stub_process
        from deploy.local.procs import terminate_tree
    finally:
        sys.path.remove(str(root))
    stub, base_url = run_stub_process(ttft_ms=20, itl_ms=2, model="stub-model")
    exporter = None
    try:
        port = free_port()
        exporter = subprocess.Popen(
            [sys.executable, "-m", "exporters", "--fake-gpus", "1", "--port", str(port),
             "--interval", "0.5", "--process-pid", str(stub.pid), "--log-level", "warning"],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        exporter_url = f"http://127.0.0.1:{port}/metrics"
        metrics_url = base_url[:-len("/v1")] + "/metrics"
        _wait_http(exporter_url)
        config = out / "endpoints-in.json"
        config.write_text(json.dumps({
            "request": {"max_tokens": 16, "read_timeout_s": 10.0, "connect_timeout_s": 3.0},
            "load": {"stages": [2], "ramp_s": 0.5, "warmup_s": 0.5, "steady_s": 1.5,
                     "drain_s": 0.5, "repetitions": 1},
            "endpoints": [{"label": "A", "base_url": base_url, "model": "stub-model",
                           "metrics_url": metrics_url, "exporter_url": exporter_url}]}))
        proc = subprocess.run(
            [sys.executable, "-m", "locustfiles.campaign", "--endpoints-file", str(config),
             "--results-dir", str(out / "results"), "--label", "golden", "--stop-timeout", "5",
             "--no-report"], cwd=root, env=env, capture_output=True, text=True, timeout=240)
        if proc.returncode != 0:
            raise RuntimeError(f"campaign failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    finally:
        if exporter is not None:
            terminate_tree(exporter)
        stop_stub_process(stub)
    config.unlink()


def produce(root: Path, out: Path, scenarios: tuple[str, ...] = ("det", "locust")) -> Path:
    if "det" in scenarios:
        produce_det(root, out / "det")
    if "locust" in scenarios:
        produce_locust(root, out / "locust")
    return out


# ---------------------------------------------------------------------------------------------
# Normalizing

PHASES = {"ramp", "warmup", "steady", "drain", "manual"}


def _text_rules(roots: list[str]) -> list[tuple[re.Pattern[str], str]]:
    rules = []
    for path, name in roots:
        if path:
            rules.append((re.compile(re.escape(path)), name))
    host = socket.gethostname()
    rules += [
        (re.compile(r"\b\d{8}-\d{6}\b"), "<STAMP>"),                     # campaign folder names
        (re.compile(r"(127\.0\.0\.1|localhost):\d+"), r"\1:<PORT>"),
        (re.compile(r"\bpid:\d+"), "pid:<PID>"),
        (re.compile(re.escape(host) + r":\d+"), "<HOST>:<PID>"),
    ]
    return rules


class Normalizer:
    def __init__(self, tree: Path, root: Path):
        # longest first: the temporary folder may sit below the checkout or the other way round
        prefixes = sorted([(str(tree), "<OUT>"), (str(root), "<ROOT>"),
                           (sys.prefix, "<VENV>"), (sys.base_prefix, "<PYTHON>")],
                          key=lambda p: -len(p[0]))
        self.rules = _text_rules(prefixes)

    def text(self, s: str) -> str:
        for rx, repl in self.rules:
            s = rx.sub(repl, s)
        return s

    # ---- JSON ----

    def json_value(self, value: Any, path: tuple[str, ...], masks: list[tuple[str, ...]],
                   key_masks: list[tuple[str, ...]]) -> Any:
        if any(_match(path, m) for m in masks):
            return _type_token(value)
        if isinstance(value, dict):
            out = {}
            renamed = any(_match(path, m) for m in key_masks)
            for i, k in enumerate(sorted(value)):
                name = f"<key{i}>" if renamed else self.text(k)
                out[name] = self.json_value(value[k], path + (k if not renamed else "*",),
                                            masks, key_masks)
            return out
        if isinstance(value, list):
            return [self.json_value(v, path + ("[]",), masks, key_masks) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def json_file(self, raw: str, masks: list[tuple[str, ...]],
                  key_masks: list[tuple[str, ...]] = ()) -> str:
        data = json.loads(raw)
        canonical = raw == json.dumps(data, indent=2, sort_keys=True) + "\n"
        norm = self.json_value(data, (), list(masks), list(key_masks))
        return (f"# canonical (indent 2, sorted keys, newline at end): {canonical}\n"
                + json.dumps(norm, indent=2, sort_keys=True, ensure_ascii=False) + "\n")

    # ---- CSV ----

    def csv_file(self, raw: str, cell: Callable[[str, str], str], *, dedupe: bool) -> str:
        """The header line as written, then the rows with each cell normalized (sorted and
        without duplicates when dedupe: the number of rows varies)."""
        header_line, _, _ = raw.partition("\n")
        rows = list(csv.reader(io.StringIO(raw, newline="")))
        if not rows:
            return "<empty file>\n"
        header, body = rows[0], rows[1:]
        out = []
        for row in body:
            if len(row) != len(header):
                out.append(f"<row of {len(row)} cells for {len(header)} columns>")
                continue
            buf = io.StringIO()
            csv.writer(buf, lineterminator="").writerow(
                [cell(name, value) for name, value in zip(header, row)])
            out.append(buf.getvalue())
        if dedupe:
            out = sorted(set(out))
            count = "rows: <n> (distinct normalized rows below)"
        else:
            count = f"rows: {len(out)}"
        return "\n".join([f"header: {header_line}", count, *out]) + "\n"


def _match(path: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    return len(path) == len(pattern) and all(p == "*" or p == q for p, q in zip(pattern, path))


def _type_token(value: Any) -> Any:
    if value is None:
        return None                 # null is a type of its own: kept
    if isinstance(value, bool):
        return "<bool>"
    if isinstance(value, int):
        return "<int>"
    if isinstance(value, float):
        return "<float>"
    if isinstance(value, str):
        return "<str>"
    if isinstance(value, list):
        return "<list>"
    return "<object>"


def _float_token(value: str) -> str:
    """A float cell as its kind: blank and nan stay, a number becomes <f> (an integer <i>)."""
    if value in ("", "nan", "inf", "-inf"):
        return value
    if re.fullmatch(r"-?\d+", value):
        return "<i>"
    float(value)
    return "<f>"


# Manifest paths whose values vary between runs (times, host, versions of the environment,
# counts, CPU figures); the key stays, the value becomes its type.
MANIFEST_MASKS_COMMON = [
    ("start_unix",), ("end_unix",),
    ("host", "hostname"), ("host", "platform"), ("host", "cpu_count"), ("host", "memory_bytes"),
    ("versions", "suite"), ("versions", "locust"), ("versions", "python"),
]
MANIFEST_MASKS_LOCUST = MANIFEST_MASKS_COMMON + [
    ("records_written",), ("locust_requests",),
    ("load_generator", "max_cpu_percent"), ("load_generator", "seconds_above_90"),
    ("load_generator", "saturated"),
    ("load_generator", "processes", "*", "max_cpu_percent"),
    ("load_generator", "processes", "*", "seconds_above_90"),
    ("load_generator", "processes", "*", "cpu_seconds"),
    ("load_generator", "loop_lag_by_stage", "*", "n"),
    ("load_generator", "loop_lag_by_stage", "*", "p50_ms"),
    ("load_generator", "loop_lag_by_stage", "*", "p99_ms"),
    ("load_generator", "loop_lag_by_stage", "*", "max_ms"),
]
MANIFEST_KEY_MASKS_LOCUST = [("load_generator", "processes")]   # keyed by host:pid

# records.csv of a real run: what varies per request
RECORD_FLOAT_MASKS = {"start_unix", "presend_s", "scheduled_unix", "send_lag_s", "ttft_s",
                      "ttfat_s", "e2e_s", "tpot_s", "itl_mean_s", "itl_p50_s", "itl_p99_s",
                      "itl_max_s", "prompt_tokens"}


def _locust_record_cell(norm: Normalizer) -> Callable[[str, str], str]:
    def cell(name: str, value: str) -> str:
        if name in RECORD_FLOAT_MASKS:
            return _float_token(value)
        if name == "request_id":
            return "<id>" if re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", value) else f"<bad id {value}>"
        if name == "request_key":   # <stage>/<worker index>-<user>/<n>
            return ("<key>" if re.fullmatch(r"-?\d+/\d+-\d+/\d+", value)
                    else f"<bad key {value}>")
        if name == "phase":
            return "<phase>" if value in PHASES else f"<bad phase {value}>"
        return norm.text(value)
    return cell


def _stage_cell(name: str, value: str) -> str:
    return _float_token(value) if name.endswith("_unix") else value


def _metric_cell(norm: Normalizer) -> Callable[[str, str], str]:
    def cell(name: str, value: str) -> str:
        if name in ("ts_unix", "value"):
            return _float_token(value)
        if name == "labels":
            # label names kept; values kept unless they vary (pids, the exporter's driver, ...)
            return norm.text(value)
        return value
    return cell


def _metrics_csv(norm: Normalizer, raw: str) -> str:
    # A failed scrape (the exporter or the stub not answering in time) may or may not happen:
    # keep the successful scrape_up rows and every metric row, drop the failures.
    lines = raw.split("\n")
    kept = [lines[0]] + [ln for ln in lines[1:] if ln and not re.search(r',scrape_up,"?error=', ln)]
    return norm.csv_file("\n".join(kept) + "\n", _metric_cell(norm), dedupe=True)


def _locust_csv(norm: Normalizer, raw: str) -> str:
    """Locust's own CSV: its header, and the (Type, Name) of its rows."""
    rows = list(csv.reader(io.StringIO(raw, newline="")))
    if not rows:
        return "<empty file>\n"
    header = rows[0]
    keys = sorted({(r[header.index("Type")] if "Type" in header else "",
                    r[header.index("Name")] if "Name" in header else "")
                   for r in rows[1:] if len(r) == len(header)})
    return "\n".join([f"header: {raw.partition(chr(10))[0]}",
                      *(f"{t},{n}" for t, n in keys)]) + "\n"


def _locust_json(raw: str) -> str:
    data = json.loads(raw)
    entries = sorted({(e.get("method"), e.get("name"), tuple(sorted(e))) for e in data},
                     key=str)
    return json.dumps([{"method": m, "name": n, "keys": list(k)} for m, n, k in entries],
                      indent=2) + "\n"


def normalize(tree: Path, root: Path) -> dict[str, str]:
    """{relative path: normalized text} for every file below tree."""
    norm = Normalizer(tree, root)
    out: dict[str, str] = {}
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        rel = norm.text(str(path.relative_to(tree))).replace("<STAMP>", "STAMP")
        raw = path.read_bytes().decode("utf-8", errors="replace")  # line endings as written
        name = path.name
        locust_run = rel.startswith("locust/")
        if name.endswith("manifest.json"):
            if locust_run:
                text = norm.json_file(raw, MANIFEST_MASKS_LOCUST, MANIFEST_KEY_MASKS_LOCUST)
            else:
                text = norm.json_file(raw, MANIFEST_MASKS_COMMON)
        elif name == "campaign.json":
            text = norm.json_file(raw, [("started_unix",), ("ended_unix",)])
        elif name == "endpoints.json":
            text = norm.json_file(raw, [])
        elif name == "locust.json":
            text = _locust_json(raw)
        elif name == "records.csv":
            text = (norm.csv_file(raw, _locust_record_cell(norm), dedupe=True) if locust_run
                    else raw)
        elif name == "stages.csv":
            text = norm.csv_file(raw, _stage_cell, dedupe=False) if locust_run else raw
        elif name == "metrics.csv":
            text = _metrics_csv(norm, raw)
        elif name.startswith("locust_") and name.endswith(".csv"):
            text = _locust_csv(norm, raw)
        else:
            text = "<not compared: log or console output>\n"
        out[rel] = text.replace("\r", "\u240d")   # a CR shows as ␍: line endings are compared
    return out


def write_fixtures(normalized: dict[str, str], dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    for rel, text in normalized.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))


def read_fixtures(dest: Path) -> dict[str, str]:
    return {str(p.relative_to(dest)): p.read_bytes().decode("utf-8")
            for p in sorted(dest.rglob("*")) if p.is_file()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=HERE.parents[1], help="the checkout to run")
    p.add_argument("--write", type=Path, help="write the normalized fixtures here")
    p.add_argument("--keep", type=Path, help="produce into this folder (kept) instead of a temp one")
    args = p.parse_args()
    root = args.root.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep.resolve() if args.keep else Path(tmp)
        produce(root, out)
        normalized = normalize(out, root)
    if args.write:
        write_fixtures(normalized, args.write)
    else:
        for rel, text in normalized.items():
            print(f"==> {rel}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
