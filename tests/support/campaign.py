"""Campaign and Locust runs for tests: endpoint configs, subprocess runs, records written so far."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, endpoints: list[dict[str, Any]], load: dict[str, Any] | None = None,
                 request: dict[str, Any] | None = None) -> Path:
    """A short endpoints config (JSON): 1 then 3 users, seconds-long phases, 16-token replies."""
    data = {"request": {"max_tokens": 16, "read_timeout_s": 10.0, "connect_timeout_s": 3.0,
                        **(request or {})},
            "load": {"stages": [1, 3], "ramp_s": 0.5, "warmup_s": 1.0, "steady_s": 2.0,
                     "drain_s": 1.0, "repetitions": 1, **(load or {})},
            "endpoints": endpoints}
    path.write_text(json.dumps(data))
    return path


def run_campaign(args: list[str], timeout: float = 240, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess:
    """``python -m locustfiles.campaign ARGS`` from the repository root, output captured."""
    return subprocess.run([sys.executable, "-m", "locustfiles.campaign", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def start_locust(config: Path, run_dir: Path, *args: str, **popen: Any) -> subprocess.Popen:
    """Locust on the project's locustfile, in its own session (the caller stops it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "users.py"),
         "--endpoints-file", str(config), "--run-dir", str(run_dir), *args],
        cwd=ROOT, start_new_session=True, **popen)


def records_written(run_dir: Path) -> int:
    """Lines in the run's records.csv so far (header included; 0 before it exists)."""
    path = run_dir / "records.csv"
    return len(path.read_text().splitlines()) if path.is_file() else 0
