"""``llm-gpu-exporter`` / ``python -m exporters``: the command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Sequence

import psutil

from .app import Exporter, ExporterConfig
from .backend import NvmlBackend, PynvmlBackend
from .process import ProcessSelector
from .selection import SelectionError, parse_gpu_selectors
from .server import ExporterHTTPServer, PortInUseError

log = logging.getLogger("exporters")

DEFAULT_PORT = 9411
RESERVED_PORTS = {8000: "vLLM's default port", 9400: "dcgm-exporter's port"}


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments."""
    p = argparse.ArgumentParser(
        prog="llm-gpu-exporter",
        description="NVML GPU metrics (and a model server's process tree) for Prometheus.")
    p.add_argument("--listen", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}; 8000 and 9400 are refused)")
    p.add_argument("--gpus", default="", metavar="LIST",
                   help="GPUs to export: NVML indices (as nvidia-smi numbers them; NVML ignores "
                        "CUDA_VISIBLE_DEVICES) or UUIDs, comma-separated (default: all)")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="NVML sampling interval (default 1.0, at least 0.1); /metrics serves "
                        "the latest sample")
    p.add_argument("--process-pid", type=int, action="append", default=[], metavar="PID",
                   help="export CPU/RSS of this process and its descendants (repeatable)")
    p.add_argument("--process-match", action="append", default=[], metavar="REGEX",
                   help="export CPU/RSS of processes whose full command line matches REGEX, "
                        "with their descendants (repeatable)")
    p.add_argument("--process-memory", action="store_true",
                   help="also export GPU memory per compute process (nvml_gpu_process_*)")
    p.add_argument("--pcie", action="store_true",
                   help="also export PCIe throughput (costs 2 x 20 ms of NVML time per GPU)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="default info")
    p.add_argument("--fake-gpus", type=int, default=None, metavar="N",
                   help="demo/test only: serve N fake GPUs instead of NVML")
    return p


def _fail(message: str) -> int:
    print(f"llm-gpu-exporter: error: {message}", file=sys.stderr)
    return 2


def _backend(fake_gpus: int | None) -> NvmlBackend:
    if fake_gpus is None:
        return PynvmlBackend()
    from .fake import FakeNvml  # only for demos and tests
    return FakeNvml(fake_gpus, vary=True)


def _check_pid(pid: int) -> None:
    """A --process-pid must name a running process: a pid that is gone never comes back as the
    same server (the kernel only hands the number to some unrelated process later)."""
    if pid < 1:
        raise ValueError(f"--process-pid {pid} is not a process id")
    if not psutil.pid_exists(pid):
        raise ValueError(f"--process-pid {pid}: no such process (as this exporter's PID namespace "
                         "sees it); start the server first, or select it with --process-match REGEX")


def _config(args: argparse.Namespace) -> ExporterConfig:
    """Validate the arguments into a config; ValueError carries the message for the user."""
    if args.port in RESERVED_PORTS:
        raise ValueError(f"port {args.port} is {RESERVED_PORTS[args.port]}; the exporter uses "
                         f"{DEFAULT_PORT} by default (use {DEFAULT_PORT + 1}, ... for more servers)")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is not a TCP port")
    if args.interval < 0.1:
        raise ValueError("--interval must be at least 0.1 s (GPM needs 100 ms between samples)")
    if args.fake_gpus is not None and args.fake_gpus < 0:
        raise ValueError("--fake-gpus must be >= 0")
    for pid in args.process_pid:
        _check_pid(pid)
    selectors = ([ProcessSelector.for_pid(pid) for pid in args.process_pid]
                 + [ProcessSelector.for_regex(rx) for rx in args.process_match])
    return ExporterConfig(gpus=parse_gpu_selectors(args.gpus) if args.gpus else (),
                          interval=args.interval, pcie=args.pcie,
                          process_memory=args.process_memory, processes=selectors)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter until SIGTERM/SIGINT; returns the exit code (2: bad usage)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = _config(args)
    except ValueError as exc:
        return _fail(str(exc))
    exporter = Exporter(_backend(args.fake_gpus), config)
    try:
        up = exporter.sampler.initialise(strict=True)
    except SelectionError as exc:
        return _fail(str(exc))
    if not up and config.gpus:
        log.warning("NVML is not available, so --gpus %s cannot be checked now; it will be "
                    "applied when NVML comes up", ",".join(config.gpus))
    try:
        server = ExporterHTTPServer(args.listen, args.port, exporter)
    except PortInUseError as exc:
        exporter.stop()
        return _fail(str(exc.strerror or exc))
    except OSError as exc:
        exporter.stop()
        return _fail(f"cannot listen on {args.listen}:{args.port}: {exc.strerror or exc}")

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    exporter.start()
    log.info("serving http://%s:%d/metrics and /healthz", args.listen, args.port)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        exporter.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
