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
    p.add_argument("--stop-timeout", type=float, default=30.0,
                   help="seconds in-flight streams get to finish when a run ends")
    p.add_argument("--no-preflight", action="store_true", help="skip the endpoint checks")
    p.add_argument("--no-report", action="store_true", help="do not build the report")
    p.add_argument("--report-args", default="", help="extra arguments for python -m analysis")
    p.add_argument("--note", action="append", default=[], metavar="TEXT",
                   help="a note printed first in the report (repeatable)")
    add_load_flags(p.add_argument_group("load settings (override [load] in the endpoints file)"))
    return p


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
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", args.label):
        raise ConfigError(f"--label {args.label!r}: use letters, digits, '_', '-' or '.' "
                          "(it names the results folder)")
    refuse_secrets({"note": args.note, "report_args": args.report_args, "label": args.label},
                   "command line")
