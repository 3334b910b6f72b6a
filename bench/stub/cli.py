"""The stub's command line: ``python -m bench.stub_server`` (see ``bench.stub``), one or N processes."""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from dataclasses import fields

from bench.stub.plan import FAULTS, StubConfig
from bench.stub.server import StubServer

DESCRIPTION = ("A stub OpenAI-compatible streaming server with known, injected timings "
               "(standard library only).")


def _listen_line(host: str, port: int) -> str:
    return f"LISTENING {f'[{host}]' if ':' in host else host}:{port}"


async def _serve_single(cfg: StubConfig, sock: socket.socket | None = None,
                        ready_fd: int | None = None, sigmask_blocked: bool = False) -> int:
    loop = asyncio.get_running_loop()
    server = StubServer(cfg)
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, server.request_stop)
    if sigmask_blocked:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    port = await server.start(sock)
    if ready_fd is None:
        sys.stdout.write(_listen_line(cfg.host, port) + "\n")
        sys.stdout.flush()
    else:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
    await server.wait_stopped()
    await server.close()
    return 0


def _set_pdeathsig() -> None:
    try:  # Linux: die with the parent even if it is SIGKILLed
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _serve_multi(cfg: StubConfig) -> int:
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    if cfg.port:
        # A plain bind fails if anything else holds the port, even a SO_REUSEPORT listener that
        # the workers would otherwise silently share it with (a stub left over from another run).
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((cfg.host, cfg.port))
    # Bound but never listening: reserves the port (port 0 -> a free one) without taking connections.
    reserve = socket.socket(family, socket.SOCK_STREAM)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserve.bind((cfg.host, cfg.port))
    port = reserve.getsockname()[1]
    parent = os.getpid()
    sigs = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    r, w = os.pipe()
    children: list[int] = []
    sys.stdout.flush()
    sys.stderr.flush()
    for _ in range(cfg.processes):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                reserve.close()
                _set_pdeathsig()
                if os.getppid() != parent:
                    os._exit(0)
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((cfg.host, port))
                sock.listen(4096)
                sock.setblocking(False)
                code = asyncio.run(_serve_single(cfg, sock, w, sigmask_blocked=True))
            except BaseException:
                traceback.print_exc(file=sys.stderr)
            finally:
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    os.close(w)
    alive = set(children)
    state = {"stopping": False}

    def stop_children(*_a) -> None:
        state["stopping"] = True
        for pid in list(alive):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)

    ready = 0
    deadline = time.monotonic() + 10.0
    with selectors.DefaultSelector() as sel:
        sel.register(r, selectors.EVENT_READ)
        while ready < cfg.processes and not state["stopping"]:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            got = os.read(r, 64)
            if not got:
                break
            ready += len(got)
    os.close(r)
    code = 0
    if ready < cfg.processes and not state["stopping"]:
        print(f"stub_server: only {ready}/{cfg.processes} processes started", file=sys.stderr)
        code = 1
        stop_children()
    elif not state["stopping"]:
        sys.stdout.write(_listen_line(cfg.host, port) + "\n")
        sys.stdout.flush()
    while alive:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        alive.discard(pid)
        if not state["stopping"]:  # a worker died on its own: take the rest down, fail
            code = 1
            stop_children()
        elif os.waitstatus_to_exitcode(status) not in (0, -signal.SIGTERM):
            code = code or 1
    reserve.close()
    return code


def _parse_args(argv: list[str] | None) -> StubConfig:
    d = StubConfig()
    p = argparse.ArgumentParser(prog="python -m bench.stub_server", description=DESCRIPTION)
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port, help="0 = pick a free port")
    p.add_argument("--ttft-ms", type=float, default=d.ttft_ms)
    p.add_argument("--itl-ms", type=float, default=d.itl_ms)
    p.add_argument("--tokens", type=int, default=d.tokens, help="tokens per reply without max_tokens")
    p.add_argument("--reasoning-tokens", type=int, default=d.reasoning_tokens)
    p.add_argument("--model", default=d.model)
    p.add_argument("--api-key", default=None)
    p.add_argument("--processes", type=int, default=d.processes, help="server processes (SO_REUSEPORT)")
    p.add_argument("--reasoning-field", default=d.reasoning_field, choices=("reasoning", "reasoning_content"))
    p.add_argument("--fault", default=None, choices=FAULTS, help="default fault for requests naming none")
    p.add_argument("--fault-rate", type=float, default=d.fault_rate)
    p.add_argument("--stall-s", type=float, default=d.stall_s)
    p.add_argument("--fault-after", type=int, default=d.fault_after)
    p.add_argument("--prompt-token-factor", type=float, default=d.prompt_token_factor,
                   help="report prompt_tokens times this (another tokenizer; default 1)")
    p.add_argument("--slots", type=int, default=d.slots,
                   help="at most this many answers generate at once per process; the rest wait "
                   "FIFO, their TTFT growing by the wait (default 0: no limit)")
    a = p.parse_args(argv)
    if a.slots < 0:
        p.error("--slots must be >= 0 (0: no limit)")
    if a.processes < 1:
        p.error("--processes must be >= 1")
    if a.prompt_token_factor <= 0:
        p.error("--prompt-token-factor must be > 0")
    return StubConfig(**{f.name: getattr(a, f.name) for f in fields(StubConfig)})


def main(argv: list[str] | None = None) -> int:
    cfg = _parse_args(argv)
    try:
        if cfg.processes > 1:
            return _serve_multi(cfg)
        return asyncio.run(_serve_single(cfg))
    except OSError as e:
        print(f"stub_server: cannot serve on {cfg.host}:{cfg.port}: {e}", file=sys.stderr)
        return 1

