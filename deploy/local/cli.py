"""``python -m deploy.local.servers up|check|stop``: the command line of the local servers
(deploy/local/servers.py starts and stops them; this module only parses and reports)."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time

from deploy.local.ports import HOST
from deploy.local.procs import http_get, port_owner, psutil
from deploy.local.servers import (SPECS, STATE_FILE, TAIL_LINES, LocalServerError, ServerSpec,
                                  _say, local_servers, log_tail, select_specs)


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _check_one(spec: ServerSpec) -> tuple[bool, list[str]]:
    base = f"http://{HOST}:{spec.port}"
    lines = []
    status, body = http_get(f"{base}/v1/models")
    owner = port_owner(spec.port)
    ok = status == 200 and spec.model.encode() in body
    lines.append(f"{spec.label}: vLLM {base}/v1 "
                 + ("UP, serves " + spec.model if ok else
                    f"DOWN (GET /v1/models -> {status})" if status else "DOWN (no answer)")
                 + (f" [{owner}]" if owner else ""))
    if ok:
        _, metrics = http_get(f"{base}/metrics")
        text = metrics.decode(errors="replace")
        names = {ln.split("{")[0].split(" ")[0] for ln in text.splitlines()
                 if ln.startswith("vllm:")}
        wanted = ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"]
        values = []
        for w in wanted:
            for ln in text.splitlines():
                if ln.startswith(w + "{") or ln.startswith(w + " "):
                    values.append(f"{w.split(':')[1]}={ln.rsplit(' ', 1)[-1]}")
                    break
        lines.append(f"  /metrics: {len(names)} vllm:* series; " + ", ".join(values))
        if psutil is not None and owner and owner.startswith("pid "):
            pid = int(owner.split()[1])
            with contextlib.suppress(psutil.Error):
                procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs)
                lines.append(f"  processes: {len(procs)} ({', '.join(str(p.pid) for p in procs)}), "
                             f"RSS {_fmt_bytes(rss)}")
    ex_status, _ = http_get(f"http://{HOST}:{spec.exporter_port}/metrics")
    lines.append(f"  exporter http://{HOST}:{spec.exporter_port}/metrics: "
                 + ("UP" if ex_status == 200 else f"DOWN ({ex_status or 'no answer'})"))
    return ok, lines


def cmd_check(args: argparse.Namespace) -> int:
    specs = select_specs(args.only)
    deadline = time.monotonic() + (args.wait or 0)
    while True:
        results = [_check_one(s) for s in specs]
        if all(ok for ok, _ in results) or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    for _, lines in results:
        print("\n".join(lines))
    return 0 if all(ok for ok, _ in results) else 1


def cmd_up(args: argparse.Namespace) -> int:
    def on_sigterm(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    # A shell starts background jobs with SIGINT ignored; `up` wants Ctrl-C / kill -INT to work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with local_servers(args.only, timeout_s=args.wait_timeout, run_setup=not args.no_setup,
                           require_exporter=args.require_exporter) as servers:
            print("READY", flush=True)
            for s in servers:
                mem = s.memory()
                print(f"  {s.label}: {s.base_url} (model {s.model}, pid {s.pid}, ready in "
                      f"{s.ready_after_s:.1f} s, RSS {_fmt_bytes(mem.get('rss_bytes', 0))}, "
                      f"PSS {_fmt_bytes(mem.get('pss_bytes', 0))})\n"
                      f"      metrics {s.metrics_url}\n"
                      f"      exporter {s.exporter_url} ({'up' if s.exporter_ok else 'NOT running'})\n"
                      f"      log {s.log_path}", flush=True)
            print("Ctrl-C (or python -m deploy.local.servers stop) stops them.", flush=True)
            while True:
                for s in servers:
                    if not s.alive():
                        _say(f"{s.label}: vLLM server exited unexpectedly (exit code "
                             f"{s.proc.returncode}); last {TAIL_LINES} lines of {s.log_path}:\n"
                             f"{log_tail(s.log_path)}")
                        return 1
                time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    except LocalServerError as exc:
        _say(f"FAILED: {exc}")
        return 1


def cmd_stop(args: argparse.Namespace) -> int:  # noqa: ARG001
    """Stop a launcher started with `up` elsewhere (via its state file)."""
    try:
        state = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        print(f"no running launcher recorded in {STATE_FILE}")
        return 0
    pid = state.get("launcher_pid")
    if psutil is None or not psutil.pid_exists(pid):
        print(f"launcher pid {pid} is gone")
        with contextlib.suppress(OSError):
            STATE_FILE.unlink()
        return 0
    proc = psutil.Process(pid)
    if "deploy.local.servers" not in " ".join(proc.cmdline()):
        print(f"the servers belong to pid {pid} ({' '.join(proc.cmdline())[:100]}), which is not "
              "`python -m deploy.local.servers up`; not touching it")
        return 1
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except psutil.TimeoutExpired:
        print(f"launcher pid {pid} did not stop within 60 s")
        return 1
    print(f"stopped launcher pid {pid}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.local.servers",
                                 description="tiny random models on real vLLM (CPU), with exporters")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the servers and stay in the foreground until Ctrl-C")
    up.add_argument("--only", choices=sorted(SPECS), help="start one server only")
    up.add_argument("--wait-timeout", type=float, default=180.0, metavar="S",
                    help="seconds to wait for readiness (default 180)")
    up.add_argument("--no-setup", action="store_true",
                    help="skip setup_vllm.sh and build_tiny_models.py")
    up.add_argument("--require-exporter", action="store_true",
                    help="fail (instead of warning) when an exporter cannot start")
    up.set_defaults(func=cmd_up)
    chk = sub.add_parser("check", help="print the status of the servers and exporters")
    chk.add_argument("--only", choices=sorted(SPECS))
    chk.add_argument("--wait", type=float, default=0, metavar="S",
                     help="wait up to S seconds for all to be up")
    chk.set_defaults(func=cmd_check)
    stop = sub.add_parser("stop", help="stop a launcher started with `up` in another shell")
    stop.set_defaults(func=cmd_stop)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
