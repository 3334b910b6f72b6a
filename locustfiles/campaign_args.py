"""``make loadtest``'s command line: its flags, and the config they make (checked before any load).

The [load] flags are the Locust process's own (``core.config.add_load_flags``); the rest are the
campaign's: which endpoints, URL and model overrides, workers, where results go, the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import re

from core.config import (ConfigError, SuiteConfig, add_load_flags, load_config, load_overrides,
                         refuse_secrets, with_overrides)
from locustfiles.cliargs import add_live_flags

# the capacity search's defaults (locustfiles.capacity; docs/capacity.md)
CAPACITY_PRECISION = 0.1
CAPACITY_MAX_PROBES = 12
CAPACITY_SPAN = 1024.0     # by default the search goes up to start x this (open: down to / this)


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        label, sep, rest = value.partition("=")
        if not sep or not label or not rest:
            raise ConfigError(f"{flag} {value!r}: write LABEL=VALUE")
        out[label] = rest
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llm-loadtest",
        description="Sweep every configured endpoint headless (repeated, alternating), "
                    "then build the comparison report.")
    p.add_argument("--endpoints-file", default=None,
                   help="endpoints/load config (default: endpoints.toml)")
    p.add_argument("--endpoint", action="append", default=[],
                   help="run only this endpoint label (repeatable)")
    p.add_argument("--url", action="append", default=[], metavar="LABEL=URL",
                   help="override an endpoint's base_url")
    p.add_argument("--model", action="append", default=[], metavar="LABEL=NAME",
                   help="override an endpoint's model")
    p.add_argument("--a-url", help="override the FIRST endpoint's base_url")
    p.add_argument("--b-url", help="override the SECOND endpoint's base_url")
    p.add_argument("--a-model", help="override the FIRST endpoint's model")
    p.add_argument("--b-model", help="override the SECOND endpoint's model")
    p.add_argument("--label", default="compare", help="name of the results folder")
    p.add_argument("--results-dir", default="results", help="where results folders go")
    p.add_argument("--workers", type=int, default=0,
                   help="Locust worker processes per run (0: one local process)")
    remote = p.add_argument_group(
        "remote workers (docs/several-machines.md)",
        "Wait for Locust workers started on other hosts (python -m locustfiles.remote_worker) "
        "and run every run on them; they reconnect by themselves between runs.")
    remote.add_argument("--expect-workers", type=int, default=0, metavar="N",
                        help="the number of remote worker processes each run waits for")
    remote.add_argument("--master-bind-host", default="0.0.0.0", metavar="ADDR",
                        help="address the master listens on for workers (default 0.0.0.0)")
    remote.add_argument("--master-bind-port", type=int, default=5557, metavar="PORT",
                        help="port the master listens on for workers (default 5557)")
    remote.add_argument("--expect-workers-max-wait", type=float, default=120.0, metavar="S",
                        help="how long a run waits for its workers (default 120)")
    remote.add_argument("--max-clock-offset-s", type=float, default=1.0, metavar="S",
                        help="refuse a worker whose clock is further than this from the "
                        "master's (default 1.0; above 10 ms it is reported)")
    p.add_argument("--stop-timeout", type=float, default=30.0,
                   help="seconds in-flight streams get to finish when a run ends")
    p.add_argument("--no-preflight", action="store_true", help="skip the endpoint checks")
    p.add_argument("--strict-arms", action="store_true",
                   help="arms that are not equivalent (prompt tokens, output length) fail the "
                   "preflight (exit 3) instead of a warning")
    p.add_argument("--warm-cache", type=int, default=0, metavar="N",
                   help="after preflight, send every endpoint the same N warm-up requests "
                   "(default 0: none; every arm then starts from its own cache state)")
    p.add_argument("--no-report", action="store_true", help="do not build the report")
    p.add_argument("--report-args", default="", help="extra arguments for python -m analysis")
    p.add_argument("--note", action="append", default=[], metavar="TEXT",
                   help="a note printed first in the report (repeatable)")
    add_live_flags(p.add_argument_group("live view"))
    add_capacity_flags(p)
    add_load_flags(p.add_argument_group("load settings (override [load] in the endpoints file)"))
    return p


def add_capacity_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "capacity under SLO (docs/capacity.md)",
        "Instead of the [load] sweep, search each endpoint's highest load that meets the SLOs.")
    g.add_argument("--capacity", action="store_true",
                   help="search the capacity under --slo (mode closed: users; open: req/s)")
    g.add_argument("--slo", action="append", default=[], metavar="METRIC<=VALUE,...",
                   help="the SLOs every probe must meet, e.g. 'ttft_p99<=0.5,tpot_p99<=0.05,"
                   "error_rate<=0.01' (latencies in seconds; repeatable)")
    g.add_argument("--capacity-start", type=float, default=None, metavar="LEVEL",
                   help="the first level probed (default: the first of [load] stages or rates)")
    g.add_argument("--capacity-max", type=float, default=None, metavar="LEVEL",
                   help=f"the highest level probed (default: start x {CAPACITY_SPAN:g})")
    g.add_argument("--capacity-precision", type=float, default=CAPACITY_PRECISION, metavar="R",
                   help="stop when the bracket's high / low - 1 <= R (default "
                   f"{CAPACITY_PRECISION:g}; closed loop: high - low <= max(1, R x low) users)")
    g.add_argument("--capacity-max-probes", type=int, default=CAPACITY_MAX_PROBES, metavar="N",
                   help=f"probes per search at most (default {CAPACITY_MAX_PROBES})")
    g.add_argument("--capacity-max-lateness-s", type=float, default=None, metavar="S",
                   help="count a probe as late (no verdict) only when its generator's lateness "
                   "p99 exceeds S seconds (default: the report's generator_late rule, the larger "
                   "of 1%% of TTFT p50 and 2 ms); recorded and stated with the results")


def capacity_flags_given(args: argparse.Namespace) -> list[str]:
    """The capacity search's flags given apart from --capacity itself."""
    return [name for name, given in (
        ("--slo", args.slo), ("--capacity-start", args.capacity_start is not None),
        ("--capacity-max", args.capacity_max is not None),
        ("--capacity-precision", args.capacity_precision != CAPACITY_PRECISION),
        ("--capacity-max-probes", args.capacity_max_probes != CAPACITY_MAX_PROBES),
        ("--capacity-max-lateness-s", args.capacity_max_lateness_s is not None)) if given]


def resolve_config(args: argparse.Namespace) -> SuiteConfig:
    config = load_config(args.endpoints_file)
    urls = _pairs(args.url, "--url")
    models = _pairs(args.model, "--model")
    for index, (url, model) in enumerate(((args.a_url, args.a_model), (args.b_url, args.b_model))):
        if (url or model) and index >= len(config.endpoints):
            raise ConfigError(f"the config has {len(config.endpoints)} endpoint(s); there is no "
                              f"{'AB'[index]} (endpoint #{index + 1}) to override")
        if url:
            urls[config.endpoints[index].label] = url
        if model:
            models[config.endpoints[index].label] = model
    config = with_overrides(config, urls=urls, models=models, **load_overrides(args))
    if args.endpoint:
        keep = [config.endpoint(label) for label in args.endpoint]
        config = dataclasses.replace(config, endpoints=tuple(keep))
    return config


def check_arguments(args: argparse.Namespace) -> None:
    """The campaign's own flags (the config's settings are checked by core.config)."""
    if args.stop_timeout < 0:
        raise ConfigError(f"--stop-timeout {args.stop_timeout:g}: give seconds >= 0")
    if args.workers < 0:
        raise ConfigError(f"--workers {args.workers}: give 0 (one local process) or more")
    if args.expect_workers < 0 or (args.expect_workers and args.workers):
        raise ConfigError("--expect-workers N (remote workers) and --workers N (local worker "
                          "processes) do not go together: give one of them")
    if args.warm_cache < 0:
        raise ConfigError(f"--warm-cache {args.warm_cache}: give 0 (no warm-up) or more")
    if args.strict_arms and args.no_preflight:
        raise ConfigError("--strict-arms checks the arms in preflight: it does not go with "
                          "--no-preflight")
    if not 1 <= args.master_bind_port <= 65535:
        raise ConfigError(f"--master-bind-port {args.master_bind_port}: give a port (1-65535)")
    if args.expect_workers_max_wait <= 0 or args.max_clock_offset_s <= 0:
        raise ConfigError("--expect-workers-max-wait and --max-clock-offset-s: give seconds > 0")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", args.label):
        raise ConfigError(f"--label {args.label!r}: use letters, digits, '_', '-' or '.' "
                          "(it names the results folder)")
    if args.capacity or capacity_flags_given(args):
        from locustfiles.capacity import check_capacity_arguments  # loads the analysis
        check_capacity_arguments(args)
    refuse_secrets({"note": args.note, "report_args": args.report_args, "label": args.label},
                   "command line")
