"""Endpoints and load configuration: the one place it is read, validated and overridden.

The file is TOML (see ``endpoints.toml`` at the repository root). API keys are never in it:
an endpoint names the environment variable that holds its key (``api_key_env``), and the key
is read from the environment only when a request is built. Anything that looks like a key
(core.secrets) is refused, wherever it is.

Every setting's type and range is declared once, beside its default, in the field's metadata
(``at_least``, ``above``, ``one_of``, ``numbers``); ``check_settings`` enforces them for the
file and for command-line overrides alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core import secrets

# [load] settings that name a file: relative paths are read from the config file's folder (or,
# on the command line, the current folder); a distributed run compares their content
LOAD_FILES = ("prompts_file", "trace_file")

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "endpoints.toml"
CONFIG_ENV_VAR = "LOCUST_ENDPOINTS_FILE"


class ConfigError(ValueError):
    """The configuration cannot be used; the message says what to change."""


def at_least(low: float) -> dict[str, Any]:
    return {"low": low}


def above(low: float) -> dict[str, Any]:
    return {"above": low}


def one_of(*choices: str) -> dict[str, Any]:
    return {"choices": choices}


def numbers(kind: type, *, low: float | None = None, above: float | None = None) -> dict[str, Any]:
    """A non-empty list of numbers of one kind (int: whole numbers only)."""
    return {"items": kind, "low": low, "above": above}


def setting(default: Any, rule: dict[str, Any] | None = None) -> Any:
    return field(default=default, metadata=rule or {})


# The modes whose load is arrivals on a schedule, whatever the server's speed (a rate per
# stage, send lag recorded), rather than a number of users each waiting for its last answer.
OPEN_LOOP_MODES = ("open", "trace")


def is_open_loop(mode: str) -> bool:
    """Open loop (Poisson arrivals) or trace replay: load set by a rate, not by users."""
    return mode in OPEN_LOOP_MODES


@dataclass(frozen=True)
class RequestSettings:
    max_tokens: int = setting(128, at_least(1))
    max_tokens_min: int = setting(0, at_least(0))  # > 0: each request draws from [this, max_tokens]
    temperature: float = setting(0.5, at_least(0))
    ignore_eos: bool = True
    connect_timeout_s: float = setting(10.0, above(0))
    read_timeout_s: float = setting(120.0, above(0))


@dataclass(frozen=True)
class Endpoint:
    label: str
    base_url: str
    model: str
    api_key_env: str = ""
    extra_body: dict[str, Any] = field(default_factory=dict)
    request: RequestSettings = field(default_factory=RequestSettings)
    metrics_url: str = ""   # the server's Prometheus /metrics (vLLM), scraped during runs
    exporter_url: str = ""  # the GPU/process exporter beside the server

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def api_key(self) -> str:
        """The key from the environment; empty when no variable is named or it is unset."""
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""


@dataclass(frozen=True)
class LoadSettings:
    mode: str = setting("closed", one_of("closed", "open", "trace"))  # concurrency; Poisson; trace
    stages: tuple[int, ...] = setting((1, 4, 8, 16, 32), numbers(int, low=1))  # users per stage
    rates: tuple[float, ...] = setting((1.0, 2.0, 4.0), numbers(float, above=0))  # req/s (open)
    ramp_s: float = setting(5.0, at_least(0))
    warmup_s: float = setting(10.0, at_least(0))
    steady_s: float = setting(30.0, above(0))    # the window results come from
    drain_s: float = setting(5.0, at_least(0))
    repetitions: int = setting(5, at_least(1))
    input_tokens: int = setting(64, at_least(1))
    prompt_words: int = setting(0, at_least(0))  # 0: derive from input_tokens (preflight calibrates)
    prompt_seed: int = 0
    prompts_file: str = ""                       # relative paths: from the config file's folder
    # the prompts file's format: auto (from its first item), openai (one item per line with
    # "messages" or "prompt"; optional "max_tokens" and "metadata"), sharegpt (conversations)
    prompts_format: str = setting("auto", one_of("auto", "openai", "sharegpt"))
    # requested output lengths: request ([request] max_tokens, or uniform from max_tokens_min),
    # lognormal (median output_median_tokens, shape output_sigma, within [max(1, max_tokens_min),
    # max_tokens]), dataset (each prompts-file item's own length; the request rule without one)
    output_dist: str = setting("request", one_of("request", "lognormal", "dataset"))
    output_median_tokens: int = setting(0, at_least(0))  # 0: half of max_tokens
    output_sigma: float = setting(0.5, above(0))
    prefix_share: float = setting(0.0, at_least(0))  # share of requests (0..1) that start with
    prefix_tokens: int = setting(0, at_least(0))     # one shared system prompt of this length
    turns: int = setting(1, at_least(1))             # closed loop: turns per conversation
    think_time_s: float = setting(0.0, at_least(0))  # a user's pause between its turns
    trace_file: str = ""                             # mode = "trace": the JSONL arrival schedule
    trace_time_scale: float = setting(1.0, above(0))  # 2: the trace replays twice as fast
    client: str = setting("fast", one_of("fast", "openai"))  # geventhttpclient or the openai SDK
    max_in_flight: int = setting(1024, at_least(1))  # open loop: concurrent streams per process
    start_spread_s: float = setting(1.0, at_least(0))  # closed loop: first request waits 0..this
    # closed loop: after a failed request a user waits this long (doubling while failures go
    # on, up to failure_backoff_max_s, 50-100% of it at random); 0 turns the wait off
    failure_backoff_s: float = setting(0.5, at_least(0))
    failure_backoff_max_s: float = setting(2.0, at_least(0))

    @property
    def stage_duration_s(self) -> float:
        return self.ramp_s + self.warmup_s + self.steady_s + self.drain_s


@dataclass(frozen=True)
class SuiteConfig:
    endpoints: tuple[Endpoint, ...]
    load: LoadSettings = field(default_factory=LoadSettings)
    source: str = ""

    def endpoint(self, label: str) -> Endpoint:
        for ep in self.endpoints:
            if ep.label == label:
                return ep
        known = ", ".join(ep.label for ep in self.endpoints)
        raise ConfigError(f"no endpoint labelled {label!r} in {self.source or 'the config'}; "
                          f"known labels: {known}")

    def to_public_dict(self) -> dict[str, Any]:
        """The config as plain data for manifests: env var names only, never key values."""
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short fingerprint of everything that shapes the load (the file's content, not its
        path): a distributed run's workers must have the master's config."""
        data = self.to_file_dict()
        for name in LOAD_FILES:   # hosts keep a file in different places: its content counts
            if data["load"].get(name):
                path = Path(data["load"][name])
                data["load"][name] = (hashlib.sha256(path.read_bytes()).hexdigest()
                                      if path.is_file() else "missing")
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_file_dict(self) -> dict[str, Any]:
        """The config in the file's own shape (loadable again with parse_config)."""
        data = dataclasses.asdict(self)
        data.pop("source")
        data["load"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data["load"].items()}
        return data


_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_known(section: str, data: dict[str, Any], cls: type) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"[{section}]: unknown setting(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")


def _number(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind is int else isinstance(value, (int, float))


def _describe_rule(rule: dict[str, Any], kind: type) -> str:
    what = "a whole number" if kind is int else "a number"
    if rule.get("low") is not None:
        return f"{what} >= {rule['low']:g}"
    if rule.get("above") is not None:
        return f"{what} > {rule['above']:g}"
    return what


def check_settings(obj: Any, section: str) -> None:
    """Every field's type and declared range (its metadata); one line naming the fix."""
    for f in dataclasses.fields(obj):
        value, rule = getattr(obj, f.name), f.metadata
        default = f.default
        kind = type(default)
        where = f"[{section}] {f.name} = {value!r}"
        if "items" in rule:
            item_kind = rule["items"]
            wanted = _describe_rule(rule, item_kind)
            if (not isinstance(value, (list, tuple)) or not value
                    or not all(_number(v, item_kind) for v in value)):
                raise ConfigError(f"{where}: expected a list of one or more numbers, each "
                                  f"{wanted}, e.g. {list(default)}")
            bad = [v for v in value if not _in_range(v, rule)]
            if bad:
                raise ConfigError(f"{where}: each value must be {wanted}")
            continue
        if kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: expected true or false")
            continue
        if kind in (int, float):
            if not _number(value, kind):
                raise ConfigError(f"{where}: expected {_describe_rule(rule, kind)}")
            if not _in_range(value, rule):
                raise ConfigError(f"{where}: must be {_describe_rule(rule, kind)}")
            continue
        if not isinstance(value, kind):
            raise ConfigError(f"{where}: expected {kind.__name__}")
        if "choices" in rule and value not in rule["choices"]:
            raise ConfigError(f"{where}: use one of {', '.join(map(repr, rule['choices']))}")


def _in_range(value: float, rule: dict[str, Any]) -> bool:
    if rule.get("low") is not None and value < rule["low"]:
        return False
    if rule.get("above") is not None and value <= rule["above"]:
        return False
    return True


def _normalise(obj: Any) -> Any:
    """Lists become tuples and whole numbers become floats where the default says so."""
    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(f.default, tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(value, tuple) and f.metadata.get("items") is float:
            value = tuple(float(v) if _number(v, float) else v for v in value)
        elif isinstance(f.default, float) and _number(value, int):
            value = float(value)
        changes[f.name] = value
    return dataclasses.replace(obj, **changes)


def _build(cls: type, section: str, data: Any, base: Any = None) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{section}] must be a table of settings, got {type(data).__name__}")
    _check_known(section, data, cls)
    values = dataclasses.asdict(base) if base is not None else {}
    values.update(data)
    obj = _normalise(cls(**values))
    check_settings(obj, section)
    return obj


def refuse_secrets(data: Any, where: str) -> None:
    """Stop at the first credential found anywhere in the raw config (never echoing it)."""
    found = secrets.find_secrets(data, "")
    if found:
        raise ConfigError(f"{where}: {found[0]} looks like a secret; never put keys in the "
                          "config, the command line or a URL: export the key in an environment "
                          "variable and set api_key_env = \"THAT_VARIABLE\" on the endpoint")


def validate_url(url: str, where: str, name: str = "base_url") -> None:
    problem = secrets.url_problem(url)
    if problem:  # the URL is not echoed: it holds the credential
        raise ConfigError(f"{where}: {name} {problem}; keys go in an environment variable "
                          "named by api_key_env, never in a URL")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{where}: {name} {url!r} is not an http(s) URL; "
                          "write it like http://127.0.0.1:8000/v1")
    try:
        parsed.port
    except ValueError:
        raise ConfigError(f"{where}: {name} {url!r} has an invalid port") from None


def validate_base_url(url: str, where: str) -> None:
    validate_url(url, where, "base_url")


def _endpoint(raw: Any, index: int, defaults: RequestSettings) -> Endpoint:
    where = f"[[endpoints]] #{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table with label, base_url and model")
    data = dict(raw)
    for required in ("label", "base_url", "model"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise ConfigError(f"{where}: {required} is required (a non-empty string)")
    if not _LABEL_RE.match(data["label"]):
        raise ConfigError(f"{where}: label {data['label']!r} must be 1-32 letters, digits, "
                          "'_', '-' or '.'")
    where = f"endpoint {data['label']!r}"
    validate_base_url(data["base_url"], where)
    for name in ("metrics_url", "exporter_url"):
        if data.get(name):
            if not isinstance(data[name], str):
                raise ConfigError(f"{where}: {name} must be a URL string")
            validate_url(data[name], where, name)
    env_name = data.get("api_key_env", "")
    if env_name and (not isinstance(env_name, str) or not _ENV_NAME_RE.match(env_name)):
        raise ConfigError(f"{where}: api_key_env must be the NAME of an environment variable "
                          "(letters, digits, '_'), not the key itself")
    request = _build(RequestSettings, f"{where} request", data.pop("request", {}), defaults)
    validate_request(request, f"{where} request")
    known = {f.name for f in dataclasses.fields(Endpoint)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    if not isinstance(data.get("extra_body", {}), dict):
        raise ConfigError(f"{where}: extra_body must be a table")
    for name in ("model", "api_key_env", "metrics_url", "exporter_url"):
        if name in data and not isinstance(data[name], str):
            raise ConfigError(f"{where}: {name} must be a string")
    return Endpoint(request=request, **data)


def parse_config(data: dict[str, Any], source: str = "") -> SuiteConfig:
    refuse_secrets(data, source or "the config")
    top_known = {"endpoints", "load", "request"}
    unknown = sorted(set(data) - top_known)
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(top_known))}")
    defaults = _build(RequestSettings, "request", data.get("request", {}))
    load = _build(LoadSettings, "load", data.get("load", {}))
    raw_endpoints = data.get("endpoints", [])
    if not isinstance(raw_endpoints, list) or not raw_endpoints:
        raise ConfigError(f"{source}: no endpoints; add at least one [[endpoints]] table with "
                          "label, base_url and model")
    endpoints = tuple(_endpoint(raw, i, defaults) for i, raw in enumerate(raw_endpoints))
    labels = [ep.label for ep in endpoints]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{source}: endpoint labels must be unique, got {labels}")
    config = SuiteConfig(endpoints=endpoints, load=load, source=source)
    validate_load(config.load)
    return config


def validate_request(request: RequestSettings, section: str = "request") -> None:
    """Rules between settings (each setting's own range is checked by check_settings)."""
    if request.max_tokens_min and not request.max_tokens_min <= request.max_tokens:
        raise ConfigError(f"[{section}] max_tokens_min = {request.max_tokens_min}: use 0 (every "
                          f"request asks for max_tokens) or 1..max_tokens ({request.max_tokens})")


def validate_load(load: LoadSettings) -> None:
    check_settings(load, "load")
    if load.prefix_share > 1:
        raise ConfigError(f"[load] prefix_share = {load.prefix_share:g}: give a share from 0 "
                          "(no shared prefix) to 1 (every request)")
    if load.prefix_share > 0 and not load.prefix_tokens:
        raise ConfigError(f"[load] prefix_share = {load.prefix_share:g} needs prefix_tokens > 0 "
                          "(the shared system prompt's length in tokens)")
    if load.mode == "trace" and not load.trace_file:
        raise ConfigError('[load] mode = "trace" needs trace_file (a JSONL schedule; see '
                          "docs/workloads.md)")
    if load.trace_file and load.mode != "trace":
        raise ConfigError(f'[load] trace_file is set but mode = "{load.mode}": set mode = '
                          '"trace" to replay it (--mode trace), or remove trace_file')
    if load.mode == "trace":
        ignored = [name for name, off in (("prompts_file", ""), ("output_dist", "request"),
                                          ("prefix_share", 0.0))
                   if getattr(load, name) != off]
        if ignored:
            raise ConfigError(f'[load] mode = "trace" sends the trace\'s own lengths with '
                              f"synthetic prompts: {', '.join(ignored)} would be ignored; "
                              "remove it, or use mode = \"open\" or \"closed\"")
    if load.turns > 1 and load.mode != "closed":
        raise ConfigError(f"[load] turns = {load.turns}: multi-turn conversations run in closed "
                          f'loop (mode = "closed"), not mode = "{load.mode}"')
    if load.output_dist == "dataset" and not load.prompts_file:
        raise ConfigError('[load] output_dist = "dataset" takes each item\'s length from '
                          "prompts_file: set prompts_file, or use output_dist = \"request\" or "
                          '"lognormal"')
    if load.failure_backoff_max_s < load.failure_backoff_s:
        raise ConfigError(f"[load] failure_backoff_max_s = {load.failure_backoff_max_s:g} is "
                          f"below failure_backoff_s = {load.failure_backoff_s:g}")


def load_config(path: str | os.PathLike[str] | None = None) -> SuiteConfig:
    """Read and validate the endpoints file (default: $LOCUST_ENDPOINTS_FILE or endpoints.toml)."""
    chosen = Path(path or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)
    if not chosen.is_file():
        raise ConfigError(f"endpoints file {str(chosen)!r} not found; pass --endpoints-file PATH "
                          "(see endpoints.toml in the repository for the format)")
    text = chosen.read_text(encoding="utf-8")
    if chosen.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{chosen}: not valid JSON: {exc}") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{chosen}: not valid TOML: {exc}") from None
    if isinstance(data, dict):
        data = _prompts_file_from(data, chosen.resolve().parent)
    return parse_config(data, source=str(chosen))


def _prompts_file_from(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A relative prompts_file or trace_file is read from the config file's folder, not
    Locust's."""
    load = data.get("load")
    if not isinstance(load, dict):
        return data
    load = dict(load)
    for name in LOAD_FILES:
        if isinstance(load.get(name), str) and load[name]:
            path = Path(load[name]).expanduser()
            if not path.is_absolute():
                load[name] = str(folder / path)
    return {**data, "load": load}


def with_overrides(config: SuiteConfig, *, urls: dict[str, str] | None = None,
                   models: dict[str, str] | None = None, **load_overrides: Any) -> SuiteConfig:
    """A copy with endpoint URLs/models and load settings replaced (command-line overrides).

    A relative prompts_file given here is taken from the current folder (where the user typed it).
    """
    urls, models = urls or {}, models or {}
    refuse_secrets({"url": urls, "model": models, "load": load_overrides}, "command line")
    for label in {*urls, *models}:
        config.endpoint(label)  # raises a clear error for an unknown label
    endpoints = []
    for ep in config.endpoints:
        changes: dict[str, Any] = {}
        if ep.label in urls:
            validate_base_url(urls[ep.label], f"override for {ep.label!r}")
            changes["base_url"] = urls[ep.label]
        if ep.label in models:
            changes["model"] = models[ep.label]
        endpoints.append(dataclasses.replace(ep, **changes))
    load_changes = {k: v for k, v in load_overrides.items() if v is not None}
    for name in LOAD_FILES:
        if load_changes.get(name):
            load_changes[name] = str(Path(load_changes[name]).expanduser().resolve())
    load = _normalise(dataclasses.replace(config.load, **load_changes))
    validate_load(load)
    return dataclasses.replace(config, endpoints=tuple(endpoints), load=load)


@dataclass(frozen=True)
class LoadFlag:
    """The command-line flag of one [load] setting."""

    name: str        # the setting (LoadSettings field)
    flag: str        # --ramp-s
    dest: str        # load_ramp_s
    kind: type       # the value's type; of each item for a list setting (numbers() rule)
    is_list: bool    # given as comma-separated numbers
    default: Any

    def parse(self, value: Any) -> Any:
        """The setting's value from the flag's (a list setting's text split and converted)."""
        if not self.is_list or not isinstance(value, str):
            return value
        try:
            return tuple(self.kind(x) for x in value.split(",") if x.strip())
        except ValueError:
            raise ConfigError(f"{self.flag}: expected numbers separated by commas, "
                              f"got {value!r}") from None


def load_flags(skip: tuple[str, ...] = ()) -> list[LoadFlag]:
    """One flag per [load] setting, from LoadSettings' fields: the type from the default, a
    list setting's item type from its ``numbers()`` rule."""
    flags = []
    for f in dataclasses.fields(LoadSettings):
        if f.name in skip:
            continue
        is_list = isinstance(f.default, tuple)
        kind = f.metadata["items"] if is_list else type(f.default)
        flags.append(LoadFlag(f.name, f"--{f.name.replace('_', '-')}", f"load_{f.name}", kind,
                              is_list, f.default))
    return flags


def add_load_flags(group: Any, skip: tuple[str, ...] = ()) -> None:
    """Add the [load] flags to an argparse (or Locust's configargparse) group. An unset flag is
    None: the file's value stands. Read them back with ``load_overrides``."""
    for spec in load_flags(skip):
        default = ",".join(map(str, spec.default)) if spec.is_list else spec.default
        group.add_argument(spec.flag, dest=spec.dest, type=str if spec.is_list else spec.kind,
                           default=None, help=f"[load] {spec.name} (file default: {default})")


def load_overrides(options: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The [load] settings given on the command line ({name: value}; None when not given).
    Raises ConfigError for a list flag that is not numbers."""
    return {spec.name: spec.parse(getattr(options, spec.dest, None)) for spec in load_flags(skip)}


def known_secrets(config: SuiteConfig) -> list[str]:
    """The key values currently in the environment for the configured endpoints; from now on
    every scrub in this process removes them too."""
    keys = [ep.api_key() for ep in config.endpoints if ep.api_key()]
    secrets.remember(*keys)
    return keys
