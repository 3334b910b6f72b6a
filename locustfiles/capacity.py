"""``make capacity`` (the campaign's --capacity): the highest load each endpoint sustains within
the SLOs, searched probe by probe, repeated, and compared (docs/capacity.md).

A probe is one normal run (one headless Locust run, one run directory under runs/) of a single
stage at one level: closed-loop users or open-loop req/s, with the [load] phases (ramp, warmup,
steady, drain). Its SLO metrics come from its steady window (analysis.capacity.probe_figures).

The search is a pure function of the probes so far (``next_step``): it brackets the capacity by
doubling from the start level (or halving, if the start fails), then bisects the bracket (in
log space in open loop, by whole users in closed loop) until it is tight enough
(--capacity-precision) or the probe budget is spent (--capacity-max-probes). A probe whose load
generator was late (the report's generator_late rule) counts neither as pass nor fail: the
level is probed once more, and a second late probe stops the search with no capacity. A probe
whose requests mostly failed to connect (the server down) stops the search, and the endpoint's
later searches, with no capacity.

Within a repetition the endpoints' searches advance in turn, one probe each (A, B, A, B, ...),
so slow drift hits both alike; each repetition starts a fresh search from the same start level,
so the repetitions are independent and their spread is the search's own.

    results/<time>-<label>/
        capacity.json       every probe, every search's capacity and bracket, the comparison
        campaign.json       the runs in order and how each ended (as make loadtest writes it)
        endpoints.json      the resolved config
        probes/             each probe's one-stage config
        runs/r01-A-p01/...  each probe's run directory
        report/             the report, with its "Capacity under SLO" section
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from analysis.capacity import (CAPACITY_FILE, CAPACITY_SCHEMA, DOWN, FAIL, FAILED, LATE, PASS,
                               Slo, lateness_note, parse_slos, probe_figures, slos_words,
                               summarise, verdict)
from analysis.errors import AnalysisError
from core import rundir
from core.config import ConfigError, SuiteConfig
from locustfiles.campaign_args import CAPACITY_SPAN, capacity_flags_given
from locustfiles.plan import user_class_name

# how a search ended
FOUND = "found"            # the bracket is tight: capacity = its low end
BUDGET = "budget"          # the probe budget ran out: capacity = the highest pass so far
ABOVE_MAX = "above_max"    # every level up to --capacity-max passed: capacity >= that
NONE_PASSED = "none_passed"  # even the lowest level failed: capacity 0
STOPPED_LATE = "late"      # the load generator was late twice at one level: no capacity
STOPPED_DOWN = "down"      # the server was down: no capacity
RUN_FAILED = "failed"      # the probe run itself failed: no capacity
SKIPPED = "skipped"        # not run: the endpoint was down in an earlier search
INTERRUPTED = "interrupted"



@dataclass(frozen=True)
class SearchSettings:
    mode: str                # "closed" (users, whole numbers) or "open" (req/s)
    start: float
    precision: float         # stop when high / low - 1 <= this (closed: also high - low <= 1)
    max_probes: int          # per search, late probes included
    max_level: float
    min_level: float
    # a probe is late above this lateness p99 (--capacity-max-lateness-s); None: the report's
    # generator_late rule (the larger of 1% of TTFT p50 and 2 ms)
    max_lateness_s: float | None = None

    @property
    def whole(self) -> bool:
        return self.mode == "closed"

    @property
    def unit(self) -> str:
        return "users" if self.whole else "req/s"


@dataclass(frozen=True)
class Probe:
    """One probe's outcome (plain data; capacity.json's "probes")."""

    endpoint: str
    repetition: int
    number: int              # 1-based, within its search
    level: float
    verdict: str             # pass, fail, late, down, failed
    metrics: dict[str, float] = field(default_factory=dict)
    failed_slos: tuple[str, ...] = ()
    goodput_per_s: float = math.nan
    requests: int = 0
    run_dir: str = ""
    reason: str = ""
    wall_s: float = math.nan  # the probe's whole time, Locust's start and stop included
    planned_s: float = math.nan


@dataclass(frozen=True)
class Step:
    """What the search does next: probe ``level``, or stop (``status`` set)."""

    level: float | None = None
    status: str = ""
    capacity: float | None = None
    low: float | None = None
    high: float | None = None
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.level is None


def bracket(probes: list[Probe]) -> tuple[float | None, float | None]:
    """(highest passing level below the lowest failing one, lowest failing level) over the
    probes with a verdict. A pass above a fail (noise) does not raise the low end: the search
    assumes the SLO metrics grow with the load and keeps the cautious reading."""
    fails = [p.level for p in probes if p.verdict == FAIL]
    high = min(fails) if fails else None
    passes = [p.level for p in probes if p.verdict == PASS and (high is None or p.level < high)]
    return (max(passes) if passes else None), high


def _tight(s: SearchSettings, low: float, high: float) -> bool:
    if s.whole:
        return high - low <= max(1, math.floor(s.precision * low))
    return high / low - 1 <= s.precision + 1e-12


def _between(s: SearchSettings, low: float, high: float) -> float:
    if s.whole:
        return float((int(low) + int(high)) // 2)
    return math.sqrt(low * high)     # the middle in log space: the same relative step each side


def next_step(s: SearchSettings, probes: list[Probe]) -> Step:
    """The search's next move, from its probes so far (pure: no I/O, no clock)."""
    judged = [p for p in probes if p.verdict in (PASS, FAIL)]
    low, high = bracket(judged)
    last = probes[-1] if probes else None
    if last is not None and last.verdict in (DOWN, FAILED):
        return Step(status=STOPPED_DOWN if last.verdict == DOWN else RUN_FAILED, low=low,
                    high=high, reason=f"probe {last.number} at {last.level:g} {s.unit}: "
                    f"{last.reason}")
    if last is not None and last.verdict == LATE:
        twice = len(probes) >= 2 and probes[-2].verdict == LATE and probes[-2].level == last.level
        if twice or len(probes) >= s.max_probes:
            return Step(status=STOPPED_LATE, low=low, high=high, reason=(
                f"the load generator was late at {last.level:g} {s.unit} "
                f"{'twice' if twice else 'and the probe budget is spent'} ({last.reason}): no "
                "capacity is reported from a late probe; add Locust workers (--workers N), "
                "run the generator on a less loaded machine, or accept a stated bound on its "
                "lateness (--capacity-max-lateness-s S)"))
        return Step(level=last.level)        # once more: lateness can be a passing hiccup
    if low is not None and high is not None and _tight(s, low, high):
        return Step(status=FOUND, capacity=low, low=low, high=high,
                    reason=f"bracket [{low:g}, {high:g}] {s.unit} is within the precision")
    if len(probes) >= s.max_probes:
        return Step(status=BUDGET, capacity=low if low is not None else 0.0, low=low, high=high,
                    reason=f"the probe budget ({s.max_probes}) is spent; bracket "
                    f"[{_g(low)}, {_g(high)}] {s.unit}")
    if not judged:
        return Step(level=s.start)
    if high is None:                          # everything passed so far: double
        if low >= s.max_level:
            return Step(status=ABOVE_MAX, capacity=low, low=low, reason=(
                f"every level up to {s.max_level:g} {s.unit} met the SLOs (raise "
                "--capacity-max to search higher)"))
        return Step(level=min(s.max_level, low * 2))
    if low is None:                           # everything failed so far: halve
        if high <= s.min_level:
            return Step(status=NONE_PASSED, capacity=0.0, high=high, reason=(
                f"even {high:g} {s.unit} broke the SLOs"))
        return Step(level=max(s.min_level, math.floor(high / 2) if s.whole else high / 2))
    return Step(level=_between(s, low, high))


def _g(x: float | None) -> str:
    return "?" if x is None else f"{x:g}"


# ---------------------------------------------------------------------------------------------
# Flags and settings

def check_capacity_arguments(args: argparse.Namespace) -> None:
    """The --capacity flags alone (with the config: ``settings_from``)."""
    if not args.capacity:
        given = capacity_flags_given(args)
        if given:
            raise ConfigError(f"{', '.join(given)} belong(s) to the capacity search: add "
                              "--capacity (or use make capacity)")
        return
    if not args.slo:
        raise ConfigError("--capacity needs --slo, e.g. --slo 'ttft_p99<=0.5,error_rate<=0.01'")
    try:
        parse_slos(args.slo)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not 0 < args.capacity_precision < 1:
        raise ConfigError(f"--capacity-precision {args.capacity_precision:g}: give a relative "
                          "width between 0 and 1, e.g. 0.1 (the bracket within 10%)")
    if args.capacity_max_lateness_s is not None and not args.capacity_max_lateness_s > 0:
        raise ConfigError(f"--capacity-max-lateness-s {args.capacity_max_lateness_s:g}: give "
                          "seconds > 0 (or leave it out: the report's generator_late rule)")
    if args.capacity_max_probes < 2:
        raise ConfigError(f"--capacity-max-probes {args.capacity_max_probes}: give 2 or more")
    for flag, value in (("--capacity-start", args.capacity_start),
                        ("--capacity-max", args.capacity_max)):
        if value is not None and not value > 0:
            raise ConfigError(f"{flag} {value:g}: give a level > 0")


def settings_from(args: argparse.Namespace, config: SuiteConfig) -> SearchSettings:
    load = config.load
    if load.mode not in ("closed", "open"):
        raise ConfigError(f'--capacity searches in closed loop (users) or open loop (req/s), '
                          f'not mode "{load.mode}": set --mode closed or --mode open')
    whole = load.mode == "closed"
    start = args.capacity_start or float(load.stages[0] if whole else load.rates[0])
    if whole and start != int(start):
        raise ConfigError(f"--capacity-start {start:g}: closed loop counts whole users")
    top = args.capacity_max or start * CAPACITY_SPAN
    if top < start:
        raise ConfigError(f"--capacity-max {top:g} is below the start level {start:g}")
    return SearchSettings(mode=load.mode, start=float(start), precision=args.capacity_precision,
                          max_probes=args.capacity_max_probes,
                          max_level=float(math.floor(top) if whole else top),
                          min_level=1.0 if whole else start / CAPACITY_SPAN,
                          max_lateness_s=args.capacity_max_lateness_s)


# ---------------------------------------------------------------------------------------------
# Running the searches

@dataclass
class Search:
    """One endpoint's search in one repetition, as it goes (capacity.json's "searches")."""

    endpoint: str
    repetition: int
    probes: list[Probe] = field(default_factory=list)
    step: Step | None = None

    def as_dict(self) -> dict[str, Any]:
        step = self.step or Step(status="running")
        best = [p for p in self.probes if p.verdict == PASS and step.capacity is not None
                and p.level == step.capacity]
        return {"endpoint": self.endpoint, "repetition": self.repetition,
                "status": step.status or "running", "capacity": step.capacity,
                "low": step.low, "high": step.high, "reason": step.reason,
                "probes": len(self.probes),
                "goodput_per_s": (best[-1].goodput_per_s if best else
                                  0.0 if step.capacity == 0 else None),
                "capacity_run_dir": best[-1].run_dir if best else None}


ProbeRunner = Callable[[str, int, int, float], Probe]


def measure(run_dir: Path, slos: tuple[Slo, ...], endpoint: str, repetition: int, number: int,
            level: float, outcome: dict[str, Any], relative: str,
            max_lateness_s: float | None = None) -> Probe:
    """A finished probe run's Probe: its figures and verdict."""
    base = dict(endpoint=endpoint, repetition=repetition, number=number, level=level,
                run_dir=relative)
    if outcome.get("status") != "complete":
        return Probe(verdict=FAILED, reason=f"the run failed: {outcome.get('reason', '?')}",
                     **base)
    try:
        fig = probe_figures(run_dir, slos, max_lateness_s)
    except AnalysisError as exc:
        return Probe(verdict=FAILED, reason=f"its records cannot be read: {exc}", **base)
    what, broken = verdict(fig, slos)
    reason = fig.down_reason if what == DOWN else fig.lateness if what == LATE else (
        "broke " + ", ".join(broken) if broken else "")
    if what == FAILED:
        reason = ("no request started in its steady window: lengthen steady_s (--steady-s) or "
                  "raise --capacity-start")
    return Probe(verdict=what, metrics=fig.metrics, failed_slos=tuple(broken),
                 goodput_per_s=fig.goodput_per_s, requests=fig.requests, reason=reason, **base)


def probe_line(p: Probe, slos: tuple[Slo, ...], s: SearchSettings, search: Search) -> str:
    """One line per probe: endpoint, repetition, probe, level, metrics vs limits, verdict,
    bracket."""
    parts = []
    for slo in slos:
        v = p.metrics.get(slo.metric, math.nan)
        mark = "ok" if slo.holds(v) else "over"
        parts.append(f"{slo.metric} {v:.3g} <= {slo.limit:g} {mark}" if v == v
                     else f"{slo.metric} n/a")
    low, high = bracket([q for q in search.probes if q.verdict in (PASS, FAIL)])
    figures = ", ".join(parts) if p.verdict in (PASS, FAIL) else p.reason
    return (f"capacity [{p.endpoint} rep {p.repetition}] probe {p.number}: {p.level:g} {s.unit}: "
            f"{figures} -> {p.verdict.upper()}; bracket [{_g(low)}, {_g(high)}]")


def run_searches(endpoints: list[str], repetitions: int, s: SearchSettings,
                 run_probe: ProbeRunner, slos: tuple[Slo, ...],
                 on_change: Callable[[list[Search], list[Probe]], None] = lambda *_: None,
                 say: Callable[[str], None] = print) -> list[Search]:
    """Every (repetition, endpoint) search, the endpoints taking turns probe by probe.
    ``run_probe(endpoint, repetition, number, level) -> Probe``; ``on_change`` after each
    probe (capacity.json is rewritten there)."""
    searches: list[Search] = []
    probes: list[Probe] = []
    down: dict[str, str] = {}
    for rep in range(1, repetitions + 1):
        active = []
        for ep in endpoints:
            search = Search(ep, rep)
            searches.append(search)
            if ep in down:
                search.step = Step(status=SKIPPED, reason=f"not run: {ep} was down in an earlier "
                                   f"search ({down[ep]})")
                say(f"capacity [{ep} rep {rep}]: {search.step.reason}")
            else:
                active.append(search)
        while active:
            for search in list(active):
                step = next_step(s, search.probes)
                if step.done:
                    search.step = step
                    active.remove(search)
                    say(f"capacity [{search.endpoint} rep {rep}]: {step.status}: "
                        + (f"capacity {step.capacity:g} {s.unit}; " if step.capacity is not None
                           else "no capacity; ") + step.reason)
                    if step.status == STOPPED_DOWN:
                        down[search.endpoint] = step.reason
                    continue
                probe = run_probe(search.endpoint, rep, len(search.probes) + 1, step.level)
                search.probes.append(probe)
                probes.append(probe)
                say(probe_line(probe, slos, s, search))
                on_change(searches, probes)
    return searches


def capacity_data(campaign: str, s: SearchSettings, slos: tuple[Slo, ...], endpoints: list[str],
                  searches: list[Search], probes: list[Probe], status: str) -> dict[str, Any]:
    """capacity.json's content."""
    data: dict[str, Any] = {
        "capacity_schema": CAPACITY_SCHEMA, "campaign": campaign, "status": status,
        "mode": s.mode, "level_name": s.unit, "settings": asdict(s),
        "slos": [{"metric": x.metric, "limit": x.limit, "text": x.text} for x in slos],
        "goodput": "completed requests/s over the steady window of the capacity probe (the "
                   "highest level that met every SLO)",
        "endpoints": endpoints,
        "probes": [asdict(p) for p in probes],
        "searches": [x.as_dict() for x in searches]}
    data["comparison"] = summarise(data)
    return data


def final_lines(data: dict[str, Any]) -> list[str]:
    """The final table and the headlines, for the terminal."""
    unit = data["level_name"]
    slos = slos_words(Slo(x["metric"], x["limit"]) for x in data["slos"])
    lines = ["", f"capacity under SLO ({slos}):",
             f"  {'endpoint':<12}{'rep':>4}  {'status':<12}{'capacity':>12}  {'bracket':<20}"
             f"{'goodput req/s':>14}{'probes':>8}"]
    for x in data["searches"]:
        cap = "-" if x["capacity"] is None else f"{x['capacity']:g} {unit}"
        br = f"[{_g(x['low'])}, {_g(x['high'])}]"
        gp = x["goodput_per_s"]
        gp = "-" if gp is None or gp != gp else f"{gp:.2f}"
        lines.append(f"  {x['endpoint']:<12}{x['repetition']:>4}  {x['status']:<12}{cap:>12}  "
                     f"{br:<20}{gp:>14}{x['probes']:>8}")
    for text in data.get("comparison", {}).get("headlines", []):
        lines.append(f"  {text}")
    lines += lateness_lines(data)
    return lines


def lateness_lines(data: dict[str, Any]) -> list[str]:
    """What a late probe meant in this search, when the user loosened the rule."""
    note = lateness_note(data)
    return [f"  NOTE: {note}"] if note else []


def run_capacity_campaign(args: argparse.Namespace, config: SuiteConfig,
                          checked: dict[str, Any] | None = None) -> int:
    """The capacity campaign: folders, the searches (each probe a normal run), capacity.json,
    campaign.json, then the report."""
    from locustfiles import campaign as cp

    # This module's campaign may not be the one running (python -m locustfiles.campaign runs it
    # as __main__, a second module object): its run_one and build_report stop cleanly on its own
    # Interrupted, so its signal handlers are the ones in force here.
    previous = cp.catch_stop_signals()
    try:
        return _run_capacity_campaign(cp, args, config, checked)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_capacity_campaign(cp: Any, args: argparse.Namespace, config: SuiteConfig,
                           checked: dict[str, Any] | None) -> int:
    from locustfiles.cliargs import live_flag_args

    try:
        slos = parse_slos(args.slo)
        s = settings_from(args, config)
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    load = config.load
    stamp = time.strftime("%Y%m%d-%H%M%S")
    campaign_dir = Path(args.results_dir).expanduser().resolve() / f"{stamp}-{args.label}"
    runs_dir = campaign_dir / "runs"
    probes_dir = campaign_dir / "probes"
    runs_dir.mkdir(parents=True, exist_ok=True)
    probes_dir.mkdir(exist_ok=True)
    rundir.write_json_atomic(campaign_dir / "endpoints.json", config.to_file_dict())
    endpoints = [ep.label for ep in config.endpoints]
    planned = load.stage_duration_s
    remote = None
    if args.expect_workers:
        remote = cp.RemoteWorkers(args.expect_workers, args.master_bind_host,
                                  args.master_bind_port, args.expect_workers_max_wait,
                                  args.max_clock_offset_s)
    per_run = planned + args.stop_timeout + 30 + (args.expect_workers_max_wait
                                                  if args.expect_workers else 0)
    print(f"capacity campaign {campaign_dir}: {len(endpoints)} endpoint(s) x "
          f"{load.repetitions} repetition(s), one search each, {s.mode} loop from "
          f"{s.start:g} {s.unit} (up to {s.max_level:g}); SLOs: {slos_words(slos)}; each probe "
          f"is one run of one stage (about {planned:.0f}s), at most {s.max_probes} probes per "
          f"search, stop when the bracket is within {s.precision:.0%}"
          + (" or 1 user" if s.whole else ""), flush=True)
    summary: dict[str, Any] = {"campaign": campaign_dir.name, "started_unix": time.time(),
                               "status": "running", "capacity": True, "order": [],
                               "config": config.to_public_dict(), "preflight": checked or {}}

    def run_probe(endpoint: str, rep: int, number: int, level: float) -> Probe:
        name = f"r{rep:02d}-{endpoint}-p{number:02d}"
        run_dir = runs_dir / name
        level_load = dataclasses.replace(
            load, repetitions=1, **({"stages": (int(level),)} if s.whole else
                                    {"rates": (float(level),)}))
        probe_config = dataclasses.replace(config, load=level_load)
        config_path = probes_dir / f"{name}.json"
        rundir.write_json_atomic(config_path, probe_config.to_file_dict())
        title = f"probe [{endpoint} rep {rep} #{number}: {level:g} {s.unit}]"
        commands = cp.locust_commands(config_path, run_dir, user_class_name(s.mode, endpoint),
                                      rep, campaign_dir.name, args.workers, args.stop_timeout,
                                      tuple(live_flag_args(args)), remote)
        entry: dict[str, Any] = {"run_dir": str(run_dir.relative_to(campaign_dir)),
                                 "endpoint": endpoint, "repetition": rep, "probe": number,
                                 "level": level}
        summary["order"].append(entry)
        started = time.monotonic()
        try:
            code = cp.run_one(commands, run_dir, probe_config, title, deadline_s=per_run + 60)
        except (cp.Interrupted, KeyboardInterrupt):
            entry.update(status="interrupted", interrupted_unix=time.time())
            raise
        wall = time.monotonic() - started
        entry.update(cp.run_outcome(run_dir, code, title))
        probe = measure(run_dir, slos, endpoint, rep, number, level, entry,
                        entry["run_dir"], s.max_lateness_s)
        return dataclasses.replace(probe, wall_s=wall, planned_s=planned)

    state: dict[str, Any] = {"searches": [], "probes": []}

    def save(searches: list[Search], probes: list[Probe], status: str = "running") -> None:
        state["searches"], state["probes"] = searches, probes
        rundir.write_json_atomic(campaign_dir / CAPACITY_FILE, capacity_data(
            campaign_dir.name, s, slos, endpoints, searches, probes, status))

    stopped_by: Any = None
    try:
        searches = run_searches(endpoints, load.repetitions, s, run_probe, slos,
                                on_change=save, say=lambda t: print(t, flush=True))
    except (cp.Interrupted, KeyboardInterrupt) as exc:
        stopped_by = exc if isinstance(exc, cp.Interrupted) else cp.Interrupted(signal.SIGINT)
        searches = state["searches"]
        for search in searches:
            if search.step is None:   # no capacity from a search cut short; its bracket kept
                low, high = bracket([p for p in search.probes if p.verdict in (PASS, FAIL)])
                search.step = Step(status=INTERRUPTED, low=low, high=high,
                                   reason=f"interrupted ({stopped_by})")
    data = capacity_data(campaign_dir.name, s, slos, endpoints, searches, state["probes"],
                         "interrupted" if stopped_by else "complete")
    rundir.write_json_atomic(campaign_dir / CAPACITY_FILE, data)
    summary["ended_unix"] = time.time()
    failed_runs = [e for e in summary["order"] if e.get("status") not in ("complete",)]
    summary["status"] = ("interrupted" if stopped_by else "failed" if failed_runs
                         else "complete")
    if stopped_by:
        summary["interrupted_by"] = str(stopped_by)
    rundir.write_json_atomic(campaign_dir / "campaign.json", summary)
    for line in final_lines(data):
        print(line, flush=True)
    walls = [p.wall_s - p.planned_s for p in state["probes"] if p.wall_s == p.wall_s]
    if walls:
        print(f"  each probe took {sum(walls) / len(walls):.1f}s on average beyond its planned "
              f"{planned:.0f}s (Locust's start and stop, the stop timeout's wait)", flush=True)
    no_capacity = [x for x in data["searches"] if x["capacity"] is None]
    completed = [e for e in summary["order"] if e.get("status") == "complete"]
    if stopped_by:
        print(f"capacity campaign interrupted ({stopped_by}); what ran is in "
              f"{campaign_dir / CAPACITY_FILE}; build a report with: make report RUNS={runs_dir}",
              file=sys.stderr, flush=True)
    report_code, stopped_by = cp.report_unless_stopped(args, campaign_dir, bool(completed),
                                                       stopped_by, "probe")
    if stopped_by:
        return cp.exit_code_for(stopped_by.signum)
    if no_capacity:
        print(f"{len(no_capacity)} search(es) found no capacity (see the reasons above)",
              file=sys.stderr, flush=True)
    return 1 if no_capacity or report_code else 0
