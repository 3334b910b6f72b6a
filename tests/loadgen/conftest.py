"""Fixtures for the load-generator tests: stub servers in subprocesses, configs, Locust runs."""

from __future__ import annotations

import subprocess
from typing import Any, Callable, Iterator

import pytest

from bench.stub_server import run_stub_process, stop_stub_process

@pytest.fixture
def stub() -> Iterator[Callable[..., str]]:
    """Start stub servers (CLI options as keywords); returns base URLs; stops them all after."""
    procs: list[subprocess.Popen] = []

    def start(**options: Any) -> str:
        proc, url = run_stub_process(**options)
        procs.append(proc)
        return url

    start.procs = procs  # type: ignore[attr-defined]
    yield start
    for proc in procs:
        stop_stub_process(proc)
