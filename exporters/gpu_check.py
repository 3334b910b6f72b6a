"""Check the exporter against a real NVIDIA GPU under a known load (needs a GPU and torch).

    python -m exporters.gpu_check [--alloc-gib 4] [--load-seconds 10]

It starts the exporter (``python -m exporters``) for the GPU torch sees as ``cuda:0``, samples
it idle, then with a known allocation, then under a bf16 matmul loop, and checks that
utilization and power rise, memory used tracks the allocation, energy grows, and GPM activity
appears on Hopper (compute capability 9.x). It prints a PASS/FAIL table.
Exit codes: 0 all passed, 1 a check failed, 2 no GPU/driver/torch here.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynvml
from prometheus_client.parser import text_string_to_metric_families

from core.rundir import series

GiB = 1 << 30
ENV_MISSING = 2


@dataclass
class Check:
    """One row of the result table."""

    name: str
    observed: str
    expected: str
    ok: bool | None  # None: skipped / informational


def _die(message: str) -> int:
    print(f"gpu_check: {message}", file=sys.stderr)
    return ENV_MISSING


def _nvml_uuids() -> list[tuple[int, str, str]]:
    """(index, UUID, name) of every GPU NVML sees; raises NVMLError without a driver."""
    pynvml.nvmlInit()
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            uuid, name = pynvml.nvmlDeviceGetUUID(h), pynvml.nvmlDeviceGetName(h)
            out.append((i, uuid.decode() if isinstance(uuid, bytes) else uuid,
                        name.decode() if isinstance(name, bytes) else name))
        return out
    finally:
        pynvml.nvmlShutdown()


def _torch_gpu_uuid(torch: Any) -> str | None:
    """The NVML UUID of cuda:0 (CUDA_VISIBLE_DEVICES applies to torch, not to NVML)."""
    uuid = getattr(torch.cuda.get_device_properties(0), "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith("GPU-") else f"GPU-{text}"


class Scraper:
    """Reads the exporter's /metrics into {sample name: value} for the one exported GPU."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.latencies: list[float] = []
        self.bad_values: list[str] = []

    def scrape(self) -> dict[str, float]:
        t0 = time.perf_counter()
        with urllib.request.urlopen(self.url, timeout=5) as r:
            text = r.read().decode()
        self.latencies.append(time.perf_counter() - t0)
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.value != s.value or s.value < 0:  # NaN or a negative sentinel
                    self.bad_values.append(f"{s.name}{s.labels}={s.value}")
                if s.name.startswith("nvml_gpu_") and "pid" not in s.labels:
                    values[s.name] = s.value
                elif s.name == series.GPU_PROCESS_MEMORY:
                    values[f"process:{s.labels['pid']}"] = s.value
                elif s.name == series.NVML_UP:
                    values[s.name] = s.value
        return values

    def collect(self, seconds: float, every: float = 0.5) -> list[dict[str, float]]:
        """Scrape repeatedly for ``seconds``."""
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            out.append(self.scrape())
            time.sleep(every)
        return out


def _mean(samples: list[dict[str, float]], name: str) -> float | None:
    vals = [s[name] for s in samples if name in s]
    return statistics.fmean(vals) if vals else None


def _fmt(value: float | None, scale: float = 1.0, unit: str = "") -> str:
    return "absent" if value is None else f"{value / scale:.3g}{unit}"


class MatmulLoad:
    """A bf16 matmul loop on cuda:0 in a background thread."""

    def __init__(self, torch: Any, size: int = 8192) -> None:
        self._torch = torch
        self._a = torch.randn(size, size, device="cuda:0", dtype=torch.bfloat16)
        self._b = torch.randn(size, size, device="cuda:0", dtype=torch.bfloat16)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for _ in range(8):
                self._a @ self._b
            self._torch.cuda.synchronize()

    def __enter__(self) -> "MatmulLoad":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_exporter(uuid: str, port: int, log_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "exporters", "--port", str(port), "--gpus", uuid,
           "--interval", "0.5", "--process-memory"]
    proc = subprocess.Popen(cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                            cwd=Path(__file__).resolve().parents[1], start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the exporter exited ({proc.returncode}):\n{log_path.read_text()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            time.sleep(1.5)  # a few sampling rounds (GPM needs two)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the exporter did not answer in 20 s:\n{log_path.read_text()}")


def run_checks(torch: Any, port: int, alloc_gib: float, load_s: float) -> list[Check]:
    """Idle, allocation and load phases; returns the table rows."""
    scraper = Scraper(port)
    checks: list[Check] = []

    def check(name: str, observed: str, expected: str, ok: bool | None) -> None:
        checks.append(Check(name, observed, expected, ok))

    major, minor = torch.cuda.get_device_capability(0)
    torch.zeros(1, device="cuda:0")  # the CUDA context, before the idle baseline
    torch.cuda.synchronize()
    time.sleep(2.0)
    idle = scraper.collect(3.0)
    mem_idle = _mean(idle, series.GPU_MEMORY_USED)

    buf = torch.empty(int(alloc_gib * GiB), dtype=torch.uint8, device="cuda:0")
    buf.fill_(1)
    torch.cuda.synchronize()
    time.sleep(1.5)
    allocated = scraper.collect(2.0)
    mem_alloc = _mean(allocated, series.GPU_MEMORY_USED)
    want = alloc_gib * GiB
    rise = None if mem_idle is None or mem_alloc is None else mem_alloc - mem_idle
    tol = 0.05 * want + 128 * (1 << 20)
    check("memory used rises by the allocation", _fmt(rise, GiB, " GiB"),
          f"{alloc_gib:g} GiB +/- {tol / GiB:.2f}", rise is not None and abs(rise - want) <= tol)
    own = allocated[-1].get(f"process:{os.getpid()}") if allocated else None
    check("per-process memory of this pid", _fmt(own, GiB, " GiB"), f">= {alloc_gib:g} GiB",
          None if own is None else own >= want)  # None: NVML sees another pid namespace
    total = _mean(allocated, series.GPU_MEMORY_TOTAL)
    check("memory total present", _fmt(total, GiB, " GiB"), "> 0", bool(total))
    del buf
    torch.cuda.empty_cache()

    e0 = allocated[-1].get(series.GPU_ENERGY) if allocated else None
    t0 = time.monotonic()
    with MatmulLoad(torch):
        time.sleep(2.0)  # ramp: let utilization windows fill
        loaded = scraper.collect(max(2.0, load_s - 2.0))
    elapsed = time.monotonic() - t0
    e1 = loaded[-1].get(series.GPU_ENERGY) if loaded else None

    u_idle, u_load = _mean(idle, series.GPU_UTILIZATION), _mean(loaded, series.GPU_UTILIZATION)
    check("utilization idle -> loaded", f"{_fmt(u_idle)} -> {_fmt(u_load)}", "loaded >= 0.8, +0.3",
          u_idle is not None and u_load is not None and u_load >= 0.8 and u_load >= u_idle + 0.3)
    p_idle, p_load = _mean(idle, series.GPU_POWER), _mean(loaded, series.GPU_POWER)
    check("power idle -> loaded", f"{_fmt(p_idle, 1, ' W')} -> {_fmt(p_load, 1, ' W')}",
          "loaded >= 1.2 x idle and +20 W", p_idle is not None and p_load is not None
          and p_load >= 1.2 * p_idle and p_load >= p_idle + 20)
    energy = None if e0 is None or e1 is None else e1 - e0
    check("energy counter grows", _fmt(energy, 1, " J"), f"> {0.5 * (p_idle or 0) * elapsed:.0f} J",
          None if energy is None else energy > 0.5 * (p_idle or 0) * elapsed)
    sm_clock = _mean(loaded, series.GPU_SM_CLOCK)
    check("SM clock under load", _fmt(sm_clock, 1e6, " MHz"), "> 0", bool(sm_clock))
    temp = _mean(loaded, series.GPU_TEMPERATURE)
    check("temperature", _fmt(temp, 1, " C"), "10-100 C", temp is not None and 10 <= temp <= 100)

    gpm = [series.GPU_SM_ACTIVE, series.GPU_SM_OCCUPANCY,
           series.GPU_TENSOR_ACTIVE, series.GPU_DRAM_ACTIVE]
    if major >= 9:
        present = [n for n in gpm if _mean(loaded, n) is not None]
        check(f"GPM series on CC {major}.{minor}", f"{len(present)}/4", "4/4", len(present) == 4)
        sm_i, sm_l = _mean(idle, gpm[0]), _mean(loaded, gpm[0])
        check("SM active idle -> loaded", f"{_fmt(sm_i)} -> {_fmt(sm_l)}", "loaded >= 0.5",
              sm_l is not None and sm_l >= 0.5 and (sm_i is None or sm_l > sm_i))
        tensor = _mean(loaded, gpm[2])
        check("tensor active under bf16 matmul", _fmt(tensor), ">= 0.1",
              tensor is not None and tensor >= 0.1)
    else:
        present = [n for n in gpm if _mean(loaded, n) is not None]
        check(f"no GPM series on CC {major}.{minor}", f"{len(present)} present", "0 (no sentinel)",
              not present)

    all_samples = idle + allocated + loaded
    up = [s.get(series.GPU_UP) for s in all_samples]
    check("nvml_gpu_up stays 1", f"{sum(1 for u in up if u == 1.0)}/{len(up)}", "all",
          all(u == 1.0 for u in up))
    check("no NaN/negative sentinels", f"{len(scraper.bad_values)} found", "0",
          not scraper.bad_values)
    lat = sorted(scraper.latencies)
    p50 = statistics.median(lat) if lat else None
    worst = lat[-1] if lat else None
    check("scrape latency p50 / max", f"{_fmt(p50, 1e-3, ' ms')} / {_fmt(worst, 1e-3, ' ms')}",
          "p50 < 50 ms, max < 1 s", p50 is not None and p50 < 0.05 and lat[-1] < 1.0)
    return checks


def print_table(checks: list[Check]) -> None:
    """The result table."""
    rows = [("check", "observed", "expected", "result")]
    rows += [(c.name, c.observed, c.expected,
              "SKIP" if c.ok is None else "PASS" if c.ok else "FAIL") for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 pass, 1 fail, 2 no GPU/driver/torch."""
    p = argparse.ArgumentParser(prog="python -m exporters.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alloc-gib", type=float, default=4.0, help="known allocation (default 4)")
    p.add_argument("--load-seconds", type=float, default=10.0, help="matmul load (default 10)")
    p.add_argument("--port", type=int, default=0, help="exporter port (default: a free one)")
    args = p.parse_args(argv)
    try:
        gpus = _nvml_uuids()
    except pynvml.NVMLError as exc:
        return _die(f"no NVIDIA GPU/driver found (NVML: {exc}). Run this on a GPU host with the "
                    "NVIDIA driver installed.")
    if not gpus:
        return _die("no NVIDIA GPU/driver found (NVML sees 0 GPUs)")
    try:
        import torch
    except ImportError:
        return _die("torch is not installed: pip install torch (a CUDA build) in this venv")
    if not torch.cuda.is_available():
        return _die("torch sees no CUDA device (CPU-only torch build, or CUDA_VISIBLE_DEVICES "
                    "hides the GPUs)")
    uuid = _torch_gpu_uuid(torch)
    match = [g for g in gpus if uuid and g[1].lower() == uuid.lower()]
    if not match:
        if uuid is None and "CUDA_VISIBLE_DEVICES" not in os.environ and len(gpus) == 1:
            match = gpus
        else:
            return _die(f"cannot map cuda:0 (UUID {uuid}) to an NVML GPU; NVML sees {gpus}")
    index, uuid, name = match[0]
    print(f"GPU {index} {uuid} ({name}), compute capability "
          f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))}")
    port = args.port or _free_port()
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu_check_exporter_{port}.log"
    try:
        exporter = _start_exporter(uuid, port, log_path)
    except RuntimeError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    try:
        checks = run_checks(torch, port, args.alloc_gib, args.load_seconds)
    finally:
        os.killpg(exporter.pid, signal.SIGTERM)
        try:
            exporter.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(exporter.pid, signal.SIGKILL)
    print_table(checks)
    failed = [c for c in checks if c.ok is False]
    print(f"\n{'FAIL' if failed else 'PASS'}: {len(checks) - len(failed)}/{len(checks)} checks "
          f"did not fail (exporter log: {log_path})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
