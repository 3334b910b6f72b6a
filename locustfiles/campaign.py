"""``make loadtest``: preflight, then the sweep against each endpoint, repeated, then the report.

Endpoints alternate (A, B, A, B, ...) so slow drift (thermal, noisy neighbours) hits both
alike. Each (repetition, endpoint) is one headless Locust run with its own run directory:

    results/<time>-<label>/
        campaign.json            what was run, in which order, and how each run ended
        endpoints.json           the resolved config (overrides applied; no secrets)
        runs/r01-A/ ...          run directories (see core.rundir)
        report/                  the comparison report (python -m analysis)
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core import rundir, secrets
from core.config import ConfigError, SuiteConfig, known_secrets, load_overrides
from core.rundir.manifest import WorkerProcess
from deploy.local.ports import local_origins
from deploy.local.procs import pdeathsig_preexec
from locustfiles.campaign_args import build_parser, check_arguments, resolve_config
from locustfiles.cliargs import live_flag_args, live_metrics_host
from locustfiles.plan import build_plan, locate, total_duration_s, user_class_name
from locustfiles.prompts import ConfigPromptError, check_prompts
from locustfiles.traces import check_trace

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILES = f"{ROOT / 'locustfiles' / 'users.py'},{ROOT / 'locustfiles' / 'sweep.py'}"
PROGRESS_EVERY_S = 5.0
STOP_GRACE_S = 30.0   # after a stop signal, how long Locust gets to write its results
REFUSED_EXIT_CODE = 2  # Locust refused the run (a config or a worker that cannot work)


class Interrupted(Exception):
    """SIGINT or SIGTERM reached the campaign; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def catch_stop_signals() -> dict[int, Any]:
    """SIGINT and SIGTERM (timeout, systemd, Kubernetes and CI cancellations send SIGTERM) stop
    the campaign cleanly. SIGINT is honoured even when inherited as ignored (a background job).
    Returns the handlers it replaced."""
    return {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}


def _announce_further_signals(signum: int, _frame: Any) -> None:
    print(f"  {signal.Signals(signum).name} again: still stopping; Locust gets up to "
          f"{STOP_GRACE_S:.0f}s to write the records it has", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RemoteWorkers:
    """Where a run's master waits for workers started on other hosts."""

    expect: int
    bind_host: str
    bind_port: int
    max_wait_s: float
    max_clock_offset_s: float

    def master_flags(self) -> list[str]:
        return ["--master", "--master-bind-host", self.bind_host,
                "--master-bind-port", str(self.bind_port), "--expect-workers", str(self.expect),
                "--expect-workers-max-wait", f"{self.max_wait_s:g}",
                "--max-clock-offset-s", f"{self.max_clock_offset_s:g}",
                # a worker host that dies: its users move to the others, the stage keeps its load
                "--enable-rebalancing"]


def locust_commands(config_path: Path, run_dir: Path, class_name: str, repetition: int,
                    campaign: str, workers: int, stop_timeout: float,
                    main_extra: tuple[str, ...] = (),
                    remote: RemoteWorkers | None = None) -> list[list[str]]:
    """The Locust command lines of one run: [master-or-local] + local workers. ``main_extra``:
    more flags for the master (or the local process) only, e.g. where it serves live metrics.
    With ``remote``, the master alone: its workers run on other hosts."""
    base = [sys.executable, "-m", "locust", "-f", LOCUSTFILES,
            "--endpoints-file", str(config_path)]
    main = base + ["--headless", "--run-dir", str(run_dir), "--repetition", str(repetition),
                   "--campaign", campaign,
                   "--csv", str(run_dir / rundir.LOCUST_CSV_PREFIX), "--csv-full-history",
                   "--json-file", str(run_dir / rundir.LOCUST_JSON),
                   "--logfile", str(run_dir / rundir.LOCUST_LOG),
                   "--stop-timeout", f"{stop_timeout:g}", "--only-summary",
                   "--exit-code-on-error", "0", *main_extra, class_name]
    if remote is not None:
        main[main.index("--headless"):main.index("--headless")] = remote.master_flags()
        return [main]
    if workers <= 0:
        return [main]
    port = _free_port()
    main[main.index("--headless"):main.index("--headless")] = [
        "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
        "--expect-workers", str(workers)]
    worker = base + ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                     class_name]
    return [main] + [list(worker) for _ in range(workers)]


def _count_lines(path: Path, state: dict[str, int]) -> int:
    """Records written so far (reads only what was appended since the last call)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(state.get("offset", 0))
            data = fh.read()
    except FileNotFoundError:
        return 0
    state["offset"] = state.get("offset", 0) + len(data)
    state["lines"] = state.get("lines", 0) + data.count(b"\n")
    return max(0, state["lines"] - 1)


def run_one(commands: list[list[str]], run_dir: Path, config: SuiteConfig, title: str,
            deadline_s: float) -> int:
    """Start the Locust processes of one run, show progress, return the main exit code."""
    run_dir.mkdir(parents=True, exist_ok=True)
    out = open(run_dir / "locust.stdout", "w")
    procs: list[subprocess.Popen] = []
    plan = build_plan(config.load)
    total = total_duration_s(plan)
    started = time.time()
    state: dict[str, int] = {}
    next_progress = started + PROGRESS_EVERY_S
    try:
        # workers first, so the master finds them; each in its own process group, so a
        # terminal's Ctrl-C reaches the campaign only and the campaign stops them in order
        for cmd in commands[1:] + commands[:1]:
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True, cwd=ROOT,
                                          preexec_fn=pdeathsig_preexec()))
        main = procs[-1]
        while main.poll() is None:
            time.sleep(0.5)
            now = time.time()
            if now - started > deadline_s:
                print(f"  {title}: still running {deadline_s:.0f}s after start; stopping it",
                      flush=True)
                _stop(procs)
                break
            if now >= next_progress:
                next_progress = now + PROGRESS_EVERY_S
                elapsed = now - started
                where = locate(plan, elapsed)
                stage = (f"stage {where[0].index + 1}/{len(plan)} "
                         f"({where[0].users or where[0].rate} {'users' if where[0].users else 'req/s'}) "
                         f"{where[1]}" if where else "finishing")
                done = _count_lines(run_dir / rundir.RECORDS, state)
                print(f"  {title}: {elapsed:4.0f}s/{total:.0f}s {stage}, {done} requests recorded",
                      flush=True)
    except (Interrupted, KeyboardInterrupt):
        signal.signal(signal.SIGINT, _announce_further_signals)
        signal.signal(signal.SIGTERM, _announce_further_signals)
        print(f"\n  {title}: interrupted; stopping Locust (records so far are kept)", flush=True)
        _stop(procs)
        raise
    finally:
        for proc in procs:
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _stop([proc], sig=signal.SIGKILL)
                proc.wait()
        out.close()
    return main.returncode


def _stop(procs: list[subprocess.Popen], sig: int = signal.SIGINT) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def exit_code_for(signum: int) -> int:
    return 128 + signum


def main(argv: list[str] | None = None) -> int:
    previous = catch_stop_signals()
    try:
        return _main(argv)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_arguments(args)
        config = resolve_config(args)
        prompts = check_prompts(config.load.prompts_file, config.load.prompts_format)
        trace = check_trace(config)   # a trace replay's file: read and checked before any load
        if args.capacity:   # the search's settings against the config, before any load
            from locustfiles.capacity import settings_from
            settings_from(args, config)
    except (ConfigError, ConfigPromptError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    known_secrets(config)  # keys from the environment: scrubbed from everything printed
    if prompts:
        print(f"prompts: {prompts.summary()}", flush=True)
    if trace:
        print(trace, flush=True)
    checked: dict[str, Any] = {}
    try:
        config = preflight(args, config, checked)
    except Interrupted as stop:
        print(f"\ninterrupted ({stop}) during preflight: no load was sent", file=sys.stderr)
        return exit_code_for(stop.signum)
    if config is None:
        return 3
    if args.capacity:   # --capacity: the search under SLO instead of the sweep
        from locustfiles.capacity import run_capacity_campaign
        return run_capacity_campaign(args, config, checked)
    return run_campaign(args, config, checked)


def preflight(args: argparse.Namespace, config: SuiteConfig,
              record: dict[str, Any] | None = None) -> SuiteConfig | None:
    """Check each endpoint before any load (None: a check failed, the reason printed), then
    whether the arms are equivalent (warned, or with --strict-arms a failure), then the
    optional warm-up pass. ``record`` gets what was found, as plain data for campaign.json."""
    record = {} if record is None else record
    if args.no_preflight:
        record["skipped"] = True
        if args.warm_cache:
            warm_arms(args, config, record)
        return config
    from locustfiles.preflight import PreflightError, check_endpoint, prompt_words

    load = config.load
    print("preflight: checking each endpoint", flush=True)
    results = []
    try:
        for ep in config.endpoints:
            result = check_endpoint(ep)
            results.append(result)
            print(f"  {ep.label}: {ep.base_url} model {ep.model}: {result.summary()}",
                  flush=True)
            for note in result.notes:
                print(f"    note: {note}", flush=True)
    except PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if "connection refused" in str(exc) and any(
                ep.base_url.startswith(local_origins()) for ep in config.endpoints):
            print("hint: these are the embedded default's local vLLM servers: start them with "
                  "`make servers` in another terminal, or run `make demo`", file=sys.stderr)
        return None
    record["endpoints"] = {r.label: {"usage": r.usage, "reasoning": r.reasoning,
                                     "tokens_per_word": r.tokens_per_word,
                                     "template_tokens": r.template_tokens} for r in results}
    if not load.prompt_words and not load.prompts_file:
        words = prompt_words(results, load.input_tokens)
        config = dataclasses.replace(config, load=dataclasses.replace(load, prompt_words=words))
        print(f"  synthetic prompts: {words} words for about {load.input_tokens} tokens",
              flush=True)
    if not check_arms(args, config, record):
        return None
    if args.warm_cache:
        warm_arms(args, config, record)
    return config


def check_arms(args: argparse.Namespace, config: SuiteConfig, record: dict[str, Any]) -> bool:
    """Arm equivalence (locustfiles.armcheck): the same probes to every endpoint, compared.
    Differences are printed as a warning and recorded; False only with --strict-arms."""
    from locustfiles import armcheck
    from locustfiles.preflight import probe_arm
    from locustfiles.prompts import load_prompts_file

    load = config.load
    file_prompts = (load_prompts_file(load.prompts_file, load.prompts_format)
                    if load.prompts_file else [])
    prompts = armcheck.probe_prompts(file_prompts)
    print(f"preflight: arm equivalence: {len(prompts)} prompts (max_tokens 1) and "
          f"{armcheck.OUTPUT_PROBE_TOKENS} output tokens asked of every endpoint", flush=True)
    probes = [probe_arm(ep, prompts) for ep in config.endpoints]
    differences = armcheck.compare_settings(config.endpoints) + armcheck.compare_arms(probes)
    print(f"  prompt tokens (equal within {armcheck.tolerance_text()}):", flush=True)
    for pp in prompts:
        counts = ", ".join(f"{p.label} {_figure(p.prompt_tokens.get(pp.name))}" for p in probes)
        print(f"    {pp.name}: {counts}", flush=True)
    outputs = ", ".join(f"{p.label} {_figure(p.output_tokens)}"
                        f"{' (counted chunks)' if p.output_counted == 'chunks' else ''}"
                        for p in probes)
    print(f"  output tokens ({armcheck.OUTPUT_PROBE_TOKENS} asked): {outputs}", flush=True)
    cache = armcheck.cache_statement(load)
    print(f"  cache: {cache}; "
          + (f"a warm-up pass of {args.warm_cache} requests per endpoint follows (--warm-cache)"
             if args.warm_cache else "no warm-up pass (--warm-cache N sends one)"), flush=True)
    record["arm_check"] = armcheck.arm_check_record(probes, prompts, differences)
    record["cache"] = {"prefix": armcheck.cache_prefix_kind(load),
                       "statement": cache, "warm_cache": args.warm_cache}
    record["strict_arms"] = bool(args.strict_arms)
    if not differences:
        print("  the arms are equivalent: same prompt tokens, output length honoured", flush=True)
        return True
    for line in armcheck.warning_lines(differences):
        print(line, file=sys.stderr, flush=True)
    if args.strict_arms:
        print("error: the arms are not equivalent and --strict-arms is set: no load was sent",
              file=sys.stderr, flush=True)
        return False
    print('  (recorded in campaign.json under "preflight"; --strict-arms makes this a preflight '
          "failure)", file=sys.stderr, flush=True)
    return True


def _figure(value: int | None) -> str:
    return "?" if value is None else str(value)


def warm_arms(args: argparse.Namespace, config: SuiteConfig, record: dict[str, Any]) -> None:
    """--warm-cache N: the same N requests to every endpoint before the load, so all arms start
    from the same (warm) cache state. A failure is warned and recorded, not fatal."""
    from locustfiles import armcheck
    from locustfiles.preflight import warm_cache
    from locustfiles.prompts import load_prompts_file, prompt_words_for

    load = config.load
    words = load.prompt_words or prompt_words_for(load.input_tokens)
    prompts = armcheck.warm_prompts(
        load.prompt_seed, words, args.warm_cache,
        load_prompts_file(load.prompts_file, load.prompts_format) if load.prompts_file else ())
    print(f"warm-up: {len(prompts)} requests ({armcheck.WARM_OUTPUT_TOKENS} output tokens each) "
          "to every endpoint, the same prompts", flush=True)
    sent: dict[str, int] = {}
    failures: dict[str, str] = {}
    for ep in config.endpoints:
        started = time.monotonic()
        sent[ep.label], failure = warm_cache(ep, prompts)
        print(f"  {ep.label}: {sent[ep.label]}/{len(prompts)} answered in "
              f"{time.monotonic() - started:.1f}s", flush=True)
        if failure:
            failures[ep.label] = failure
            print(f"WARNING: warm-up of {ep.label} stopped after {sent[ep.label]} requests: "
                  f"{failure}; the arms may not start from the same cache state",
                  file=sys.stderr, flush=True)
    record["warm_cache"] = {"requests_per_arm": len(prompts),
                            "output_tokens": armcheck.WARM_OUTPUT_TOKENS,
                            "answered": sent, "failures": failures}


def run_campaign(args: argparse.Namespace, config: SuiteConfig,
                 checked: dict[str, Any] | None = None) -> int:
    """Every (repetition, endpoint) run, alternating; campaign.json; then the report."""
    load = config.load
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # absolute: Locust runs from the repository root, whatever folder the user is in
    campaign_dir = Path(args.results_dir).expanduser().resolve() / f"{stamp}-{args.label}"
    runs_dir = campaign_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    config_path = campaign_dir / "endpoints.json"
    rundir.write_json_atomic(config_path, config.to_file_dict())

    order = [(rep, ep) for rep in range(1, load.repetitions + 1) for ep in config.endpoints]
    planned = total_duration_s(build_plan(load))
    per_run = planned + args.stop_timeout + 30 + (args.expect_workers_max_wait
                                                  if args.expect_workers else 0)
    remote = None
    if args.expect_workers:
        remote = RemoteWorkers(args.expect_workers, args.master_bind_host, args.master_bind_port,
                               args.expect_workers_max_wait, args.max_clock_offset_s)
        print(f"each run waits up to {remote.max_wait_s:g}s for {remote.expect} remote workers "
              f"on {remote.bind_host}:{remote.bind_port}; on each worker host run:\n"
              f"  python -m locustfiles.remote_worker --master-host <this host> "
              f"--master-port {remote.bind_port} --config-port {args.llm_metrics_port}\n"
              "(the workers take each run's config from the master)" if args.llm_metrics_port
              else f"  python -m locustfiles.remote_worker --master-host <this host> "
              f"--master-port {remote.bind_port} --endpoints-file <the same endpoints file>"
              f"{' <the same load flags>' if given_load_flags(args) else ''}", flush=True)
    if args.llm_metrics_port:
        print(f"live metrics while a run goes: http://{live_metrics_host(args)}:"
              f"{args.llm_metrics_port}/metrics (Prometheus: deploy/prometheus; Grafana: "
              "deploy/grafana)", flush=True)
    print(f"campaign {campaign_dir}: {len(order)} runs of about {planned:.0f}s each "
          f"({len(config.endpoints)} endpoints x {load.repetitions} repetitions, alternating; "
          f"streams in flight at a run's end get up to {args.stop_timeout:g}s more)", flush=True)
    summary: dict[str, Any] = {"campaign": campaign_dir.name, "started_unix": time.time(),
                               "status": "running", "order": [],
                               "config": config.to_public_dict(),
                               "preflight": checked or {}}
    failed = 0
    refused = False
    stopped_by: Interrupted | None = None
    for number, (rep, ep) in enumerate(order, 1):
        class_name = user_class_name(load.mode, ep.label)
        run_dir = runs_dir / f"r{rep:02d}-{ep.label}"
        title = f"run {number}/{len(order)} [{ep.label} rep {rep}]"
        print(f"{title}: starting -> {run_dir}", flush=True)
        commands = locust_commands(config_path, run_dir, class_name, rep, campaign_dir.name,
                                   args.workers, args.stop_timeout, tuple(live_flag_args(args)),
                                   remote)
        entry: dict[str, Any] = {"run_dir": str(run_dir.relative_to(campaign_dir)),
                                 "endpoint": ep.label, "repetition": rep}
        summary["order"].append(entry)
        try:
            code = run_one(commands, run_dir, config, title, deadline_s=per_run + 60)
        except (Interrupted, KeyboardInterrupt) as exc:
            stopped_by = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
            entry.update(status="interrupted", interrupted_unix=time.time())
            break
        entry.update(run_outcome(run_dir, code, title))
        if entry["status"] != "complete":
            failed += 1
        if code == REFUSED_EXIT_CODE:   # the run refused its setting: the next would too
            print(f"{title} was refused (exit {code}): starting no more runs", file=sys.stderr,
                  flush=True)
            refused = True
            break
    summary["ended_unix"] = time.time()
    summary["status"] = ("interrupted" if stopped_by else "failed" if failed else "complete")
    if stopped_by:
        summary["interrupted_by"] = str(stopped_by)
    rundir.write_json_atomic(campaign_dir / "campaign.json", summary)

    completed = [e for e in summary["order"] if e.get("status") == "complete"]
    if stopped_by:
        print(f"campaign interrupted ({stopped_by}) after {len(completed)} complete run(s); "
              "nothing more was started. Build a report of what ran with: make report "
              f"RUNS={runs_dir}", file=sys.stderr, flush=True)
    report_code, stopped_by = report_unless_stopped(args, campaign_dir, bool(completed),
                                                    stopped_by, "run")
    if stopped_by:
        return exit_code_for(stopped_by.signum)
    if refused:
        return REFUSED_EXIT_CODE
    return 1 if failed or report_code else 0


def report_unless_stopped(args: argparse.Namespace, campaign_dir: Path, anything_complete: bool,
                          stopped_by: Interrupted | None, what: str
                          ) -> tuple[int, Interrupted | None]:
    """The campaign's report, unless it was stopped or asked not to (--no-report) or nothing
    completed; then where the results are. Returns the report's exit code and the signal that
    stopped the campaign (one may arrive while the report is built)."""
    report_code = 0
    runs_dir = campaign_dir / "runs"
    if not stopped_by and not args.no_report and anything_complete:
        try:
            report_code = build_report(campaign_dir, args.report_args, args.note)
        except Interrupted as stop:
            print(f"report interrupted ({stop}); rebuild it with: make report RUNS={runs_dir}",
                  file=sys.stderr, flush=True)
            stopped_by = stop
    elif not stopped_by and not anything_complete:
        print(f"no {what} completed: no report", file=sys.stderr, flush=True)
    print(f"results: {campaign_dir}", flush=True)
    return report_code, stopped_by


def run_outcome(run_dir: Path, code: int, title: str) -> dict[str, Any]:
    """How one run ended, from Locust's exit code and the run's manifest; printed as it is.

    A run is complete only if Locust exited 0, the manifest says complete, and it recorded at
    least one request."""
    outcome: dict[str, Any] = {"exit_code": code}
    try:
        m = rundir.read_manifest(run_dir)
    except (OSError, ValueError) as exc:   # rundir.ManifestError is a ValueError
        m, problem = rundir.Manifest(), f"its manifest is unreadable: {exc}"
    else:
        problem = ""
        if m.status != rundir.RunStatus.COMPLETE:
            problem = f"the run's status is {_plain(m.status)!r}"
            if m.failure_reason:
                problem += f": {m.failure_reason}"
        elif not m.records_written:
            problem = "it recorded no requests"
    if code != 0 or problem:
        reason = problem or f"Locust exited with code {code}"
        outcome.update(status="failed", reason=reason)
        print(f"{title}: FAILED: {reason}; last lines of its log:\n"
              f"{_tail(run_dir / rundir.LOCUST_LOG)}\n{_tail(run_dir / 'locust.stdout', 10)}",
              file=sys.stderr, flush=True)
        return outcome
    lg = m.load_generator or rundir.LoadGeneratorSummary()
    warn = " WARNING: load generator saturated" if lg.saturated else ""
    print(f"{title}: done, {m.records_written} records "
          f"(Locust counted {m.locust_requests}), "
          f"generator CPU max {lg.max_cpu_percent or 0:.0f}%{warn}", flush=True)
    for line in worker_lines(m.workers or []):
        print(line, flush=True)
    outcome["status"] = "complete"
    return outcome


def given_load_flags(args: argparse.Namespace) -> list[str]:
    """The [load] settings given on the command line (remote workers need them too)."""
    return [name for name, value in load_overrides(args).items() if value is not None]


def worker_lines(workers: list[WorkerProcess]) -> list[str]:
    """A distributed run's workers as the campaign prints them: clocks, and any loss."""
    lines = []
    for w in workers:
        clock = (f"clock {w.clock_offset_s * 1e3:+.2f} ms (+-{(w.clock_error_s or 0) * 1e3:.2f})"
                 if w.clock_offset_s is not None else "clock not measured")
        lost = ""
        if w.lost:
            when = (time.strftime("%H:%M:%S", time.localtime(w.last_batch_unix))
                    if w.last_batch_unix else "the start")
            lost = f", LOST: no records after {when}"
        lines.append(f"    worker {w.worker} on {w.host or '?'}: {w.records} records, {clock}{lost}")
    return lines


def _plain(value: Any) -> Any:
    """A status as its plain string (an enum member's value)."""
    return getattr(value, "value", value)


def build_report(campaign_dir: Path, extra: str = "", notes: list[str] | None = None) -> int:
    cmd = [sys.executable, "-m", "analysis", str(campaign_dir / "runs"),
           "--out", str(campaign_dir / "report")] + extra.split()
    for note in notes or []:
        cmd += ["--note", note]
    print("report: building", flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=pdeathsig_preexec())
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait(timeout=STOP_GRACE_S)
        raise


def cli() -> int:
    """The command-line entry: everything printed is scrubbed of credentials."""
    sys.stdout = secrets.ScrubbingStream(sys.stdout)
    sys.stderr = secrets.ScrubbingStream(sys.stderr)
    return main()


if __name__ == "__main__":
    sys.exit(cli())
