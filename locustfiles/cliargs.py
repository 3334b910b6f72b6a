"""The suite's Locust command-line flags, and the config they make.

One flag per [load] setting (built by ``core.config.add_load_flags``, as the campaign's are),
plus the run's identity. Unset flags keep the file's value.
"""

from __future__ import annotations

import argparse
from typing import Any

from core.config import (CONFIG_ENV_VAR, SuiteConfig, add_load_flags, load_config,
                         load_overrides, with_overrides)
from core.rundir.series import CLIENT_METRICS_PORT
from locustfiles.prompts import check_prompts
from locustfiles.traces import check_trace

# The campaign runs each repetition as its own Locust run: repetitions is not a Locust flag.
NOT_LOCUST_FLAGS = ("repetitions",)


def add_arguments(parser: Any) -> None:
    """Locust's init_command_line_parser listener."""
    group = parser.add_argument_group("LLM load suite")
    group.add_argument("--endpoints-file", default=None, env_var=CONFIG_ENV_VAR,
                       help="endpoints/load config (TOML or JSON); default endpoints.toml")
    group.add_argument("--run-dir", default=None,
                       help="run directory to write (default results/<time>-<classes>)")
    group.add_argument("--campaign", default="", help="campaign id (set by make loadtest)")
    group.add_argument("--repetition", type=int, default=0, help="repetition number")
    add_live_flags(group)
    group.add_argument("--max-clock-offset-s", type=float, default=None, metavar="S",
                       help="distributed runs: refuse a worker whose clock is further than this "
                       "from the master's (default 1.0; above 10 ms it is logged)")
    add_load_flags(group, skip=NOT_LOCUST_FLAGS)


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 for off."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0 turns the live metrics off)")
    return port


def add_live_flags(group: Any) -> None:
    """Where the master (or the local process) serves its live metrics; the campaign passes
    them on to each run's Locust."""
    group.add_argument("--llm-metrics-port", type=port_number, default=CLIENT_METRICS_PORT,
                       metavar="PORT", help="serve the load generator's live Prometheus metrics "
                       f"on this port of the master (default {CLIENT_METRICS_PORT}; 0: off)")
    group.add_argument("--llm-metrics-host", default=None, metavar="ADDR",
                       help="address for the live metrics (default 127.0.0.1, or the master's "
                       "bind address with remote workers; 0.0.0.0 for all interfaces)")


def live_metrics_host(options: Any) -> str:
    """Where the live metrics listen: the flag, else the master's bind address with remote
    workers (they fetch each run's config there), else 127.0.0.1."""
    return options.llm_metrics_host or (
        getattr(options, "master_bind_host", None) if getattr(options, "expect_workers", 0)
        else None) or "127.0.0.1"


def live_flag_args(options: Any) -> list[str]:
    """The live-metrics flags as command-line arguments (the campaign's, for each run)."""
    return ["--llm-metrics-port", str(options.llm_metrics_port),
            "--llm-metrics-host", live_metrics_host(options)]


def config_from_options(options: Any) -> SuiteConfig:
    """The config with the command line's overrides, its prompts file checked (no load starts
    on a config that cannot work). Raises ConfigError / ConfigPromptError (ValueErrors)."""
    config = load_config(getattr(options, "endpoints_file", None))
    config = with_overrides(config, **load_overrides(options, skip=NOT_LOCUST_FLAGS))
    check_prompts(config.load.prompts_file, config.load.prompts_format)
    check_trace(config)
    return config
