"""Helpers for the load-generator tests (configs, campaign runs)."""

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
    data = {"request": {"max_tokens": 16, "read_timeout_s": 10.0, "connect_timeout_s": 3.0,
                        **(request or {})},
            "load": {"stages": [1, 3], "ramp_s": 0.5, "warmup_s": 1.0, "steady_s": 2.0,
                     "drain_s": 1.0, "repetitions": 1, **(load or {})},
            "endpoints": endpoints}
    path.write_text(json.dumps(data))
    return path


def run_campaign(args: list[str], timeout: float = 240, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "locustfiles.campaign", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
