"""The suite's Locust command-line flags, and the config they make.

One flag per [load] setting (built by ``core.config.add_load_flags``, as the campaign's are),
plus the run's identity. Unset flags keep the file's value.
"""

from __future__ import annotations

from typing import Any

from core.config import (CONFIG_ENV_VAR, SuiteConfig, add_load_flags, load_config,
                         load_overrides, with_overrides)
from locustfiles.prompts import check_prompts

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
    add_load_flags(group, skip=NOT_LOCUST_FLAGS)


def config_from_options(options: Any) -> SuiteConfig:
    """The config with the command line's overrides, its prompts file checked (no load starts
    on a config that cannot work). Raises ConfigError / ConfigPromptError (ValueErrors)."""
    config = load_config(getattr(options, "endpoints_file", None))
    config = with_overrides(config, **load_overrides(options, skip=NOT_LOCUST_FLAGS))
    check_prompts(config.load.prompts_file)
    return config
