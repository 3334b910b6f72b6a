"""Child processes of the local launchers: spawned in their own session, killed as a whole tree,
and sent SIGTERM by the kernel if the launcher itself dies (even by SIGKILL).

Used by deploy/local/servers.py (vLLM servers and exporters) and by the campaign
(locustfiles/campaign.py: its Locust children and the report). Standard library + psutil.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a suite dependency; degrade, do not die
    psutil = None  # type: ignore[assignment]

from deploy.local.ports import HOST

ROOT = Path(__file__).resolve().parents[2]


def port_owner(port: int, host: str = HOST) -> str | None:
    """If something listens on host:port, a description of it ('pid 123 (python -m vllm...)')."""
    in_use = False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError:
            in_use = True
    if not in_use:
        return None
    if psutil is not None:
        try:
            for conn in psutil.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    if conn.pid is None:
                        return "a process this user cannot see"
                    try:
                        p = psutil.Process(conn.pid)
                        cmd = " ".join(p.cmdline())[:160] or p.name()
                    except psutil.Error:
                        cmd = "?"
                    return f"pid {conn.pid} ({cmd})"
        except (psutil.Error, OSError):
            pass
    return "an unknown process"



def pdeathsig_preexec():
    """preexec_fn: on Linux, ask the kernel to SIGTERM the child if the launcher dies (even by
    SIGKILL), so a crashed launcher leaves no server behind."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return preexec


def spawn(cmd: Sequence[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} started by deploy/local\n")
        log.write("# " + " ".join(cmd) + "\n")
        log.flush()
        return subprocess.Popen(
            list(cmd), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,  # own session => own process group
            preexec_fn=pdeathsig_preexec(),
        )


def descendants(pid: int) -> list:
    if psutil is None:
        return []
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def terminate_tree(proc: subprocess.Popen | None, known: Sequence = (), grace_s: float = 10.0) -> None:
    """SIGTERM the child's process group, wait, then SIGKILL the group and every descendant seen."""
    if proc is None:
        return
    tree = list(known) + descendants(proc.pid)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left (the group, descendants that re-grouped themselves) gets SIGKILL.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if psutil is not None:
        alive = []
        for p in tree:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
                    alive.append(p)
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int | None, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (OSError, ValueError):
        return None, b""
