"""The embedded default: two tiny random models served by REAL vLLM on the CPU, an exporter beside each.

    python -m deploy.local.servers up [--only qwen3|qwen2] [--wait-timeout 180] [--no-setup]
    python -m deploy.local.servers check [--wait SECONDS]
    python -m deploy.local.servers stop

    from deploy.local.servers import local_servers
    with local_servers(only=None, timeout_s=180) as servers:
        for s in servers:
            print(s.label, s.base_url, s.metrics_url, s.exporter_url, s.pid)

Runs with the suite's python (stdlib + psutil). vLLM itself runs from its own venv (.venv-vllm, made
by setup_vllm.sh); the models are built by build_tiny_models.py. See docs/local-vllm.md.

| label | model      | vLLM (OpenAI API)        | vLLM /metrics                 | exporter                      |
| qwen3 | tiny-qwen3 | http://127.0.0.1:8101/v1 | http://127.0.0.1:8101/metrics | http://127.0.0.1:9411/metrics |
| qwen2 | tiny-qwen2 | http://127.0.0.1:8102/v1 | http://127.0.0.1:8102/metrics | http://127.0.0.1:9412/metrics |

Every child starts in its own session (so its own process group); stopping kills the groups and
any descendant that left them, on success, on failure, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a suite dependency; degrade, do not die
    psutil = None  # type: ignore[assignment]

from deploy.local.ports import EXPORTER_PORTS, HOST, VLLM_PORTS
from deploy.local.procs import descendants, http_get, port_owner, spawn, terminate_tree

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


VLLM_VENV = _env_path("VLLM_VENV", ROOT / ".venv-vllm")
MODELS_DIR = _env_path("LOCAL_MODELS_DIR", ROOT / ".cache" / "models")
LOG_DIR = _env_path("LOCAL_LOG_DIR", ROOT / ".cache" / "logs")
STATE_FILE = LOG_DIR / "local-servers.json"
TAIL_LINES = 30


@dataclass(frozen=True)
class ServerSpec:
    label: str
    model: str
    port: int
    exporter_port: int
    reasoning_parser: str | None = None


SPECS: dict[str, ServerSpec] = {
    "qwen3": ServerSpec("qwen3", "tiny-qwen3", VLLM_PORTS["qwen3"], EXPORTER_PORTS["qwen3"],
                        reasoning_parser="qwen3"),
    "qwen2": ServerSpec("qwen2", "tiny-qwen2", VLLM_PORTS["qwen2"], EXPORTER_PORTS["qwen2"]),
}


class LocalServerError(RuntimeError):
    """Starting the local servers failed; the message says what and where to look."""


def _say(msg: str) -> None:
    print(f"[local-servers] {msg}", file=sys.stderr, flush=True)


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join("    " + line for line in text[-lines:]) or "    (empty)"



def _cpu_threads(n_servers: int) -> int:
    """OpenMP threads per server: the cores split between the servers, one left for vLLM's
    scheduler and API processes; at least 1 (2 cores -> 1 each)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, n_servers) - 1)


class LocalServer:
    """One vLLM server (and its exporter) started by this module."""

    def __init__(self, spec: ServerSpec, *, models_dir: Path = MODELS_DIR, log_dir: Path = LOG_DIR,
                 vllm_python: Path | None = None, suite_python: str | None = None,
                 omp_threads: int = 1) -> None:
        self.spec = spec
        self.label = spec.label
        self.model = spec.model
        self.port = spec.port
        self.base_url = f"http://{HOST}:{spec.port}/v1"
        self.metrics_url = f"http://{HOST}:{spec.port}/metrics"
        self.exporter_url = f"http://{HOST}:{spec.exporter_port}/metrics"
        self.model_dir = models_dir / spec.model
        self.log_path = log_dir / f"vllm-{spec.label}.log"
        self.exporter_log_path = log_dir / f"exporter-{spec.label}.log"
        self.vllm_python = vllm_python or (VLLM_VENV / "bin" / "python")
        self.suite_python = suite_python or sys.executable
        self.omp_threads = omp_threads
        self.proc: subprocess.Popen | None = None
        self.exporter_proc: subprocess.Popen | None = None
        self.exporter_ok = False
        self.ready = False
        self.killed = False
        self.started_at: float | None = None
        self.ready_after_s: float | None = None
        self._known_tree: list = []

    # -- public surface ------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The vLLM API server's pid (the engine core and worker are its children)."""
        return self.proc.pid if self.proc else None

    @property
    def exporter_pid(self) -> int | None:
        return self.exporter_proc.pid if self.exporter_proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """Every pid of this server's process trees (vLLM and exporter) that is running now."""
        out = []
        for proc in (self.proc, self.exporter_proc):
            if proc is not None and proc.poll() is None:
                out.append(proc.pid)
                out.extend(p.pid for p in descendants(proc.pid))
        return out

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the vLLM server (its whole process group: API server, engine core, worker), as a
        crash would. The exporter keeps running (it should report the process gone); everything is
        still cleaned up when local_servers() exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._remember_tree()
        self.killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if sig == signal.SIGKILL and psutil is not None:
            for p in self._known_tree:
                with contextlib.suppress(psutil.Error):
                    p.kill()

    def memory(self) -> dict[str, float]:
        """RSS and (where readable) PSS in bytes, summed over the vLLM process tree."""
        rss = pss = 0.0
        if psutil is None or not self.alive():
            return {}
        for p in [psutil.Process(self.proc.pid), *descendants(self.proc.pid)]:
            with contextlib.suppress(psutil.Error):
                try:
                    info = p.memory_full_info()
                    rss += info.rss
                    pss += getattr(info, "pss", info.rss)
                except psutil.AccessDenied:
                    rss += p.memory_info().rss
        return {"rss_bytes": rss, "pss_bytes": pss}

    def __repr__(self) -> str:
        return (f"LocalServer({self.label!r}, base_url={self.base_url!r}, pid={self.pid}, "
                f"alive={self.alive()})")

    # -- lifecycle -----------------------------------------------------------------------------
    def vllm_command(self) -> list[str]:
        cmd = [
            str(self.vllm_python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir), "--served-model-name", self.model,
            "--host", HOST, "--port", str(self.port),
            "--max-model-len", "1024", "--dtype", "bfloat16",
            "--disable-uvicorn-access-log",
        ]
        if self.spec.reasoning_parser:
            cmd += ["--reasoning-parser", self.spec.reasoning_parser]
        # e.g. LOCAL_VLLM_EXTRA_ARGS="--enforce-eager" (skips torch.compile: faster start, slower steps)
        cmd += shlex.split(os.environ.get("LOCAL_VLLM_EXTRA_ARGS", ""))
        return cmd

    def vllm_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the vLLM venv must not see the suite's packages
        env.pop("VIRTUAL_ENV", None)
        env.update({
            "VLLM_CPU_KVCACHE_SPACE": env.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # GiB
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # Two servers share few cores: let the OS place threads instead of vLLM's default of
            # pinning every server's worker to the same core, and size OpenMP to the share.
            "VLLM_CPU_OMP_THREADS_BIND": env.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", str(self.omp_threads)),
        })
        return env

    def exporter_command(self) -> list[str]:
        return [self.suite_python, "-m", "exporters", "--listen", HOST,
                "--port", str(self.spec.exporter_port), "--process-pid", str(self.pid)]

    def start(self) -> None:
        if not (self.model_dir / "config.json").is_file():
            raise LocalServerError(
                f"{self.label}: model {self.model_dir} is missing: the model build did not run or "
                f"failed (run {self.vllm_python} deploy/local/build_tiny_models.py)")
        if not Path(self.vllm_python).exists():
            raise LocalServerError(
                f"{self.label}: {self.vllm_python} not found: run bash deploy/local/setup_vllm.sh")
        self.started_at = time.monotonic()
        self.proc = spawn(self.vllm_command(), self.log_path, self.vllm_env())

    def start_exporter(self) -> str | None:
        """Start the exporter beside the server; returns a warning instead of raising."""
        if not (ROOT / "exporters" / "__main__.py").is_file():
            return f"{self.label}: exporters/__main__.py does not exist; no exporter on {self.exporter_url}"
        owner = port_owner(self.spec.exporter_port)
        if owner:
            return f"{self.label}: exporter port {self.spec.exporter_port} is already in use by {owner}"
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.exporter_proc = spawn(self.exporter_command(), self.exporter_log_path, env)
        return None

    def check_exporter(self, timeout_s: float = 15.0) -> str | None:
        if self.exporter_proc is None:
            return None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rc = self.exporter_proc.poll()
            if rc is not None:
                return (f"{self.label}: exporter exited with code {rc}; last lines of "
                        f"{self.exporter_log_path}:\n{log_tail(self.exporter_log_path, 15)}")
            status, _ = http_get(self.exporter_url, timeout_s=2.0)
            if status == 200:
                self.exporter_ok = True
                return None
            time.sleep(0.3)
        return f"{self.label}: exporter did not answer on {self.exporter_url} within {timeout_s:.0f} s"

    def poll_ready(self) -> bool:
        """True once GET /v1/models answers 200 and lists the model; raises if vLLM died."""
        if self.ready:
            return True
        rc = self.proc.poll() if self.proc else None
        if rc is not None:
            raise LocalServerError(
                f"{self.label}: vLLM server crashed during start-up (exit code {rc}); "
                f"last {TAIL_LINES} lines of {self.log_path}:\n{log_tail(self.log_path)}")
        status, body = http_get(f"{self.base_url}/models", timeout_s=2.0)
        if status == 200 and self.model.encode() in body:
            self.ready = True
            self.ready_after_s = time.monotonic() - (self.started_at or time.monotonic())
            self._remember_tree()
        return self.ready

    def _remember_tree(self) -> None:
        if self.proc is not None:
            seen = {p.pid for p in self._known_tree}
            self._known_tree += [p for p in descendants(self.proc.pid) if p.pid not in seen]

    def stop(self) -> None:
        self._remember_tree()
        terminate_tree(self.exporter_proc, grace_s=5.0)
        terminate_tree(self.proc, known=self._known_tree, grace_s=15.0)


# ----------------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------------

def _run_step(what: str, cmd: Sequence[str], log_path: Path, timeout_s: float) -> None:
    """Run a set-up step, echoing its lines; on failure raise with its last lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(list(cmd), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if line.startswith("["):  # the scripts' own progress lines
                    print(line.rstrip(), file=sys.stderr, flush=True)
                if time.monotonic() - t0 > timeout_s:
                    raise subprocess.TimeoutExpired(cmd, timeout_s)
            rc = proc.wait(timeout=max(1.0, timeout_s - (time.monotonic() - t0)))
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.flush()
            if sys.exc_info()[0] is subprocess.TimeoutExpired:
                raise LocalServerError(f"{what} took longer than {timeout_s:.0f} s; see {log_path}") from None
            raise
    if rc != 0:
        raise LocalServerError(
            f"{what} failed (exit code {rc}); last {TAIL_LINES} lines of {log_path}:\n{log_tail(log_path)}")


def setup(*, build_timeout_s: float = 900.0) -> None:
    """setup_vllm.sh (idempotent, ~1 s when done) and build_tiny_models.py (cached)."""
    _run_step("vLLM set-up (deploy/local/setup_vllm.sh)",
              ["bash", str(HERE / "setup_vllm.sh")], LOG_DIR / "setup_vllm.log", build_timeout_s)
    py = VLLM_VENV / "bin" / "python"
    _run_step("model build (deploy/local/build_tiny_models.py)",
              [str(py), str(HERE / "build_tiny_models.py"), "--out", str(MODELS_DIR)],
              LOG_DIR / "build_tiny_models.log", build_timeout_s)


# ----------------------------------------------------------------------------------------------
# The context manager
# ----------------------------------------------------------------------------------------------

def select_specs(only: str | Sequence[str] | None) -> list[ServerSpec]:
    if only is None:
        return list(SPECS.values())
    names = [only] if isinstance(only, str) else list(only)
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise LocalServerError(f"unknown server {unknown}; choose from {sorted(SPECS)}")
    return [SPECS[n] for n in names]


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """While servers run, turn SIGTERM into SystemExit so cleanup runs (main thread only, and only
    if nobody else handles SIGTERM)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_state(servers: list[LocalServer]) -> None:
    with contextlib.suppress(OSError):
        STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(json.dumps({
            "launcher_pid": os.getpid(),
            "servers": [{"label": s.label, "pid": s.pid, "exporter_pid": s.exporter_pid,
                         "base_url": s.base_url, "log": str(s.log_path)} for s in servers],
        }, indent=2))


def _clear_state() -> None:
    with contextlib.suppress(OSError):
        state = json.loads(STATE_FILE.read_text())
        if state.get("launcher_pid") == os.getpid():
            STATE_FILE.unlink()


@contextlib.contextmanager
def local_servers(only: str | Sequence[str] | None = None, timeout_s: float = 180.0, *,
                  run_setup: bool = True, require_exporter: bool = False,
                  verbose: bool = True) -> Iterator[list[LocalServer]]:
    """Start the selected servers (default both), wait until each answers GET /v1/models, yield
    the LocalServer objects; stop everything on exit, whatever the reason.

    Raises LocalServerError saying what failed: a port in use (and by which process), the set-up
    or model build, a server that crashed (exit code and the last lines of its log), or a server
    not ready within timeout_s. Exporter problems are warnings unless require_exporter.
    """
    say = _say if verbose else (lambda msg: None)
    specs = select_specs(only)
    servers: list[LocalServer] = []
    with _sigterm_as_exit():
        try:
            busy = [f"port {p} ({s.label} {kind}) is already in use by {owner}"
                    for s in specs for kind, p in (("vLLM", s.port),)
                    if (owner := port_owner(p))]
            if busy:
                raise LocalServerError(
                    "; ".join(busy) + ". Stop it (python -m deploy.local.servers stop, or kill "
                    "that pid) or check it with python -m deploy.local.servers check")
            if run_setup:
                t0 = time.monotonic()
                setup()
                say(f"set-up and models ready in {time.monotonic() - t0:.1f} s")
            threads = _cpu_threads(len(specs))
            for spec in specs:
                server = LocalServer(spec, omp_threads=threads)
                servers.append(server)
                server.start()
                say(f"{spec.label}: starting vLLM ({spec.model}) on {server.base_url}, pid {server.pid}, "
                    f"log {server.log_path}")
                warning = server.start_exporter()
                if warning:
                    if require_exporter:
                        raise LocalServerError(warning)
                    say("WARNING " + warning)
            _write_state(servers)
            deadline = time.monotonic() + timeout_s
            pending = list(servers)
            while pending:
                for s in list(pending):
                    if s.poll_ready():
                        pending.remove(s)
                        say(f"{s.label}: ready after {s.ready_after_s:.1f} s")
                if not pending:
                    break
                if time.monotonic() > deadline:
                    s = pending[0]
                    raise LocalServerError(
                        f"{s.label}: vLLM not ready after {timeout_s:.0f} s (GET {s.base_url}/models "
                        f"did not answer 200; process alive: {s.alive()}); last {TAIL_LINES} lines "
                        f"of {s.log_path}:\n{log_tail(s.log_path)}")
                time.sleep(0.5)
            for s in servers:
                warning = s.check_exporter()
                if warning:
                    if require_exporter:
                        raise LocalServerError(warning)
                    say("WARNING " + warning)
            yield servers
        finally:
            if servers:
                say("stopping " + ", ".join(s.label for s in servers) + " ...")
            for s in servers:
                s.stop()
            _clear_state()
            if servers:
                left = [p for s in servers for p in s.pids()]
                say("stopped" + (f" (still alive: {left})" if left else ""))




if __name__ == "__main__":
    from deploy.local.cli import main

    sys.exit(main())
