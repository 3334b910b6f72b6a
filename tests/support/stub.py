"""Stub servers (``bench.stub``) for tests: subprocesses started on demand, always stopped."""
from __future__ import annotations

import subprocess
from typing import Any

from bench.stub_server import run_stub_process, stop_stub_process


class StubProcesses:
    """Starts stub servers as subprocesses (CLI options as keywords); ``close`` stops them all.

        with StubProcesses() as stub:
            url = stub(ttft_ms=5, itl_ms=1)    # the base URL, like http://127.0.0.1:PORT/v1
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def __call__(self, **options: Any) -> str:
        proc, url = run_stub_process(**options)
        self.procs.append(proc)
        return url

    def close(self) -> None:
        while self.procs:
            stop_stub_process(self.procs.pop())

    def __enter__(self) -> "StubProcesses":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
