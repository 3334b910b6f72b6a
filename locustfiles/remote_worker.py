"""A worker host's side of a campaign with remote workers: Locust workers that come back.

The campaign (``make loadtest ARGS="--expect-workers N"``) starts one Locust master per run, and
a Locust worker exits when its master quits. This command keeps ``--processes`` Locust workers
connected across the campaign's runs: it fetches the run's config from the master (the live
metrics port serves it, key variables' names only), starts the workers on it, and starts them
again when they exit, until it is stopped (Ctrl-C, SIGTERM) or ``--runs`` runs were served.

    python -m locustfiles.remote_worker --master-host 10.0.0.5 [--processes 2]

With ``--endpoints-file`` the workers load that file instead (it must give the master's config:
the master refuses a worker whose config differs; docs/several-machines.md). The keys come from
this host's environment, as on the master.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from core.rundir.series import CLIENT_METRICS_PORT
from deploy.local.procs import pdeathsig_preexec
from locustfiles.livemetrics import CONFIG_ROUTE

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILES = f"{ROOT / 'locustfiles' / 'users.py'},{ROOT / 'locustfiles' / 'sweep.py'}"
POLL_S = 1.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m locustfiles.remote_worker",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--master-host", required=True, help="the campaign's host")
    p.add_argument("--master-port", type=int, default=5557, help="its --master-bind-port")
    p.add_argument("--config-port", type=int, default=CLIENT_METRICS_PORT,
                   help=f"its --llm-metrics-port, where the run's config is served (default "
                   f"{CLIENT_METRICS_PORT})")
    p.add_argument("--endpoints-file", default=None,
                   help="load this config instead of the master's (it must be the same)")
    p.add_argument("--processes", type=int, default=1,
                   help="Locust worker processes on this host (about one per core)")
    p.add_argument("--runs", type=int, default=0,
                   help="stop after serving this many runs (default 0: until stopped)")
    return p


def fetch_config(host: str, port: int, timeout_s: float = 2.0
                 ) -> tuple[str, dict[str, Any]] | None:
    """(the run's name, its config) from its master; None while no run is up."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{CONFIG_ROUTE}",
                                    timeout=timeout_s) as answer:
            payload = json.loads(answer.read())
        return str(payload["run"]), payload["config"]
    except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError):
        return None


def worker_command(args: argparse.Namespace, config_path: Path) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", LOCUSTFILES, "--worker",
            "--master-host", args.master_host, "--master-port", str(args.master_port),
            "--endpoints-file", str(config_path)]


class Stopped(Exception):
    pass


def _stop(signum: int, _frame: Any) -> None:
    raise Stopped(signal.Signals(signum).name)


def serve(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    workdir = Path(tempfile.mkdtemp(prefix="llm-worker-"))
    served = 0
    last_run = ""
    procs: list[subprocess.Popen] = []
    try:
        while not args.runs or served < args.runs:
            if args.endpoints_file:
                config_path = Path(args.endpoints_file).resolve()
            else:
                fetched = fetch_config(args.master_host, args.config_port)
                if fetched is None or fetched[0] == last_run:   # no run, or the one just served
                    time.sleep(POLL_S)
                    continue
                last_run, config = fetched
                config_path = workdir / "endpoints.json"
                config_path.write_text(json.dumps(config))
            print(f"run {served + 1}: starting {args.processes} Locust worker(s) for "
                  f"{args.master_host}:{args.master_port}", flush=True)
            procs = [subprocess.Popen(worker_command(args, config_path), cwd=ROOT,
                                      preexec_fn=pdeathsig_preexec())
                     for _ in range(args.processes)]
            codes = [p.wait() for p in procs]
            procs = []
            served += 1
            print(f"run {served}: the workers exited ({codes}); waiting for the next run",
                  flush=True)
            if args.endpoints_file:   # no run name to tell runs apart: give the master time
                time.sleep(2 * POLL_S)    # to end (its next run starts a new master)
    except Stopped as stop:
        print(f"{stop}: stopping the workers", flush=True)
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.processes < 1:
        print("--processes: give 1 or more", file=sys.stderr)
        return 2
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
