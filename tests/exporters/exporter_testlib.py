"""Helpers for the exporter tests: fake clocks, goldens, bounded exporter subprocesses.

A plain module rather than conftest.py: other test folders have a conftest.py of their own.
Free ports and waits are in tests/support (``from support import free_port, wait_until``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest

from exporters.app import Exporter, ExporterConfig
from exporters.fake import FakeNvml
from support import free_port

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
PYTHON = sys.executable


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StepClock:
    """Each call returns the previous value plus ``step``: a render always 'takes' ``step`` s."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def make_exporter(fake: FakeNvml, clock: Callable[[], float] | None = None,
                  **config: object) -> Exporter:
    """An exporter over ``fake`` with deterministic clocks (scrape duration always 0.0025 s)."""
    return Exporter(fake, ExporterConfig(**config), clock=clock or FakeClock(),
                    render_clock=StepClock(0.0025))


def check_golden(name: str, text: str) -> None:
    """Compare with golden/<name>; UPDATE_GOLDEN=1 rewrites the file instead."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDEN=1 once"
    assert text == path.read_text(), f"exposition differs from {path}"


def series(text: str, name: str) -> dict[str, float]:
    """{label-string: value} of one metric name in an exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, value = line.rsplit(" ", 1)
            out[key[len(name):]] = float(value)
    return out


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body); connection errors raise."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@contextlib.contextmanager
def running(cmd: list[str], log_path: Path, env: dict[str, str] | None = None
            ) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` in its own session; always terminate (then kill) it and its group."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)


def exporter_cmd(port: int, *args: str) -> list[str]:
    """The command line of an exporter subprocess."""
    return [PYTHON, "-m", "exporters", "--listen", "127.0.0.1", "--port", str(port), *args]


@contextlib.contextmanager
def exporter_process(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """A running exporter subprocess that answers /healthz; yields (process, port)."""
    port = free_port()
    log_path = tmp_path / f"exporter-{port}.log"
    with running(exporter_cmd(port, *args), log_path) as proc:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"exporter did not start (rc={proc.poll()}):\n{log_path.read_text()}")
            try:
                if http_get(f"http://127.0.0.1:{port}/healthz", 1)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        yield proc, port


def real_nvml_present() -> bool:
    """Whether this machine has a working NVIDIA driver (the fake-NVML tests then step aside)."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True
