"""Starting stub servers from Python: in a thread of this process, or as the CLI in a subprocess.

    h = start_stub_in_thread(ttft_ms=50, itl_ms=20, tokens=128)   # h.url, h.port, h.stats, h.stop()
    proc, base_url = run_stub_process(ttft_ms=50, processes=2)     # CLI in a subprocess
    stop_stub_process(proc)
"""
from __future__ import annotations

import asyncio
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.stub.plan import make_config
from bench.stub.server import StubServer


# ---- in-thread server ------------------------------------------------------------------------
class StubHandle:
    """A stub server running on its own event loop in a daemon thread."""

    def __init__(self, server: StubServer, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
                 host: str, port: int):
        self._server = server
        self._loop = loop
        self._thread = thread
        self.host = host
        self.port = port
        h = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{h}:{port}"
        self.url = self.base_url + "/v1"
        self.config = server.cfg

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the server's counters (see ``Stats.snapshot``)."""
        return self._server.stats.snapshot()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._server.request_stop)
            except RuntimeError:
                pass
            self._thread.join(timeout)

    def __enter__(self) -> "StubHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_stub_in_thread(**options: Any) -> StubHandle:
    """Start a stub server (options: the ``StubConfig`` fields) in a thread; returns when listening."""
    cfg = make_config(options)
    if cfg.processes != 1:
        raise ValueError("start_stub_in_thread runs one event loop; use run_stub_process for processes > 1")
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = StubServer(cfg)
        try:
            loop.run_until_complete(server.start())
            holder["server"], holder["loop"] = server, loop
            ready.set()
            loop.run_until_complete(server.wait_stopped())
        except BaseException as e:  # surfaced to the caller
            holder["error"] = e
        finally:
            try:
                loop.run_until_complete(server.close())
            finally:
                loop.close()
                ready.set()

    t = threading.Thread(target=run, name=f"stub-server-{cfg.port}", daemon=True)
    t.start()
    if not ready.wait(10.0):
        raise RuntimeError("stub server did not start within 10 s")
    if "error" in holder:
        raise RuntimeError(f"stub server failed to start: {holder['error']!r}") from holder["error"]
    return StubHandle(holder["server"], holder["loop"], t, cfg.host, holder["server"].port)


# ---- subprocess ------------------------------------------------------------------------------
_REPO_ROOT = Path(__file__).resolve().parents[2]


def run_stub_process(*, timeout: float = 10.0, python: str | None = None,
                     env: dict[str, str] | None = None, **options: Any) -> tuple[subprocess.Popen, str]:
    """Launch the CLI in a subprocess; wait (at most ``timeout`` s) for its LISTENING line.

    Options are the CLI flags with underscores (``ttft_ms=50``, ``processes=2``, ``api_key="k"``).
    Returns ``(proc, base_url)`` with base_url like ``http://127.0.0.1:PORT/v1``. Stop it with
    ``stop_stub_process(proc)`` (SIGTERM, then SIGKILL).
    """
    make_config(options)  # validate names early
    options.setdefault("host", "127.0.0.1")
    options.setdefault("port", 0)
    args = [python or sys.executable, "-m", "bench.stub_server"]
    for k, v in options.items():
        if v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        args += [flag] if v is True else [flag, str(v)]
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = str(_REPO_ROOT) + (os.pathsep + child_env["PYTHONPATH"]
                                                 if child_env.get("PYTHONPATH") else "")
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=str(_REPO_ROOT), env=child_env)
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(fd, 4096)
            if not chunk:  # stdout closed: it is exiting
                try:
                    proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    pass
                break
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode(errors="replace").strip()
    if not line.startswith("LISTENING "):
        exited = proc.poll()
        stop_stub_process(proc, timeout=2.0)
        why = (f"exited with code {exited} (see its stderr)" if exited is not None
               else f"did not report LISTENING within {timeout} s")
        raise RuntimeError(f"stub server {why}; stdout={buf!r}")
    return proc, f"http://{line.split()[1]}/v1"


def stop_stub_process(proc: subprocess.Popen, timeout: float = 5.0) -> int:
    """SIGTERM the stub process, wait, SIGKILL if needed; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


