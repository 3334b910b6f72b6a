"""Endpoints and load configuration: the one place it is read, validated and overridden.

The file is TOML (see ``endpoints.toml`` at the repository root). API keys are never in it:
an endpoint names the environment variable that holds its key (``api_key_env``), and the key
is read from the environment only when a request is built.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "endpoints.toml"
CONFIG_ENV_VAR = "LOCUST_ENDPOINTS_FILE"


class ConfigError(ValueError):
    """The configuration cannot be used; the message says what to change."""


@dataclass(frozen=True)
class RequestSettings:
    max_tokens: int = 128
    max_tokens_min: int = 0      # > 0: each request draws max_tokens from [this, max_tokens]
    temperature: float = 0.5
    ignore_eos: bool = True
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0


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
    mode: str = "closed"                     # closed: concurrency sweep; open: Poisson arrivals
    stages: tuple[int, ...] = (1, 4, 8, 16, 32)  # users per stage (closed loop)
    rates: tuple[float, ...] = (1.0, 2.0, 4.0)   # requests/s per stage (open loop)
    ramp_s: float = 5.0
    warmup_s: float = 10.0
    steady_s: float = 30.0
    drain_s: float = 5.0
    repetitions: int = 5
    input_tokens: int = 64
    prompt_words: int = 0                    # 0: derive from input_tokens (preflight calibrates)
    prompt_seed: int = 0
    prompts_file: str = ""
    client: str = "fast"                     # fast (geventhttpclient) or openai (SDK)
    max_in_flight: int = 1024                # open loop: cap on concurrent streams per process
    start_spread_s: float = 1.0              # closed loop: a new user's first request waits 0..this

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

    def to_file_dict(self) -> dict[str, Any]:
        """The config in the file's own shape (loadable again with parse_config)."""
        data = dataclasses.asdict(self)
        data.pop("source")
        data["load"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data["load"].items()}
        return data


_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_SECRET_KEYS = {"api_key", "apikey", "key", "token", "authorization", "password", "secret"}


def _check_known(section: str, data: dict[str, Any], cls: type) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"[{section}]: unknown setting(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")


def _build(cls: type, section: str, data: dict[str, Any], base: Any = None) -> Any:
    _check_known(section, data, cls)
    values = dataclasses.asdict(base) if base is not None else {}
    values.update(data)
    try:
        obj = cls(**values)
    except TypeError as exc:
        raise ConfigError(f"[{section}]: {exc}") from None
    for f in dataclasses.fields(cls):
        default_type = type(getattr(cls(), f.name)) if f.name != "label" else str
        value = getattr(obj, f.name)
        if default_type is tuple and isinstance(value, list):
            object.__setattr__(obj, f.name, tuple(value))
        elif default_type is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(obj, f.name, float(value))
        elif not isinstance(value, default_type):
            raise ConfigError(f"[{section}] {f.name} = {value!r}: expected {default_type.__name__}")
    return obj


def validate_base_url(url: str, where: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{where}: base_url {url!r} is not an http(s) URL; "
                          "write it like http://127.0.0.1:8000/v1")
    try:
        parsed.port
    except ValueError:
        raise ConfigError(f"{where}: base_url {url!r} has an invalid port") from None


def _endpoint(raw: dict[str, Any], index: int, defaults: RequestSettings) -> Endpoint:
    where = f"[[endpoints]] #{index + 1}"
    secrets = sorted(k for k in raw if k.lower() in _SECRET_KEYS)
    if secrets:
        raise ConfigError(f"{where}: {secrets[0]!r} looks like a secret; never put keys in the "
                          "config: export it in an environment variable and set "
                          "api_key_env = \"THAT_VARIABLE\"")
    data = dict(raw)
    for required in ("label", "base_url", "model"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise ConfigError(f"{where}: {required} is required (a non-empty string)")
    if not _LABEL_RE.match(data["label"]):
        raise ConfigError(f"{where}: label {data['label']!r} must be 1-32 letters, digits, "
                          "'_', '-' or '.'")
    where = f"endpoint {data['label']!r}"
    validate_base_url(data["base_url"], where)
    request = _build(RequestSettings, f"{where} request", data.pop("request", {}), defaults)
    validate_request(request, f"{where} request")
    known = {f.name for f in dataclasses.fields(Endpoint)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    if not isinstance(data.get("extra_body", {}), dict):
        raise ConfigError(f"{where}: extra_body must be a table")
    return Endpoint(request=request, **data)


def parse_config(data: dict[str, Any], source: str = "") -> SuiteConfig:
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
    if request.max_tokens < 1:
        raise ConfigError(f"[{section}] max_tokens must be >= 1")
    if request.max_tokens_min and not 1 <= request.max_tokens_min <= request.max_tokens:
        raise ConfigError(f"[{section}] max_tokens_min = {request.max_tokens_min}: use 0 (every "
                          f"request asks for max_tokens) or 1..max_tokens ({request.max_tokens})")


def validate_load(load: LoadSettings) -> None:
    if load.mode not in ("closed", "open"):
        raise ConfigError(f"[load] mode = {load.mode!r}: use 'closed' (concurrency sweep) or 'open'")
    if load.client not in ("fast", "openai"):
        raise ConfigError(f"[load] client = {load.client!r}: use 'fast' or 'openai'")
    if not load.stages or any(int(u) < 1 for u in load.stages):
        raise ConfigError(f"[load] stages = {list(load.stages)}: give one or more user counts >= 1")
    if not load.rates or any(r <= 0 for r in load.rates):
        raise ConfigError(f"[load] rates = {list(load.rates)}: give one or more rates > 0")
    for name in ("ramp_s", "warmup_s", "drain_s", "start_spread_s"):
        if getattr(load, name) < 0:
            raise ConfigError(f"[load] {name} must be >= 0")
    if load.steady_s <= 0:
        raise ConfigError("[load] steady_s must be > 0: it is the window results come from")
    if load.repetitions < 1:
        raise ConfigError("[load] repetitions must be >= 1")
    if load.input_tokens < 1:
        raise ConfigError("[load] input_tokens must be >= 1")


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
    return parse_config(data, source=str(chosen))


def with_overrides(config: SuiteConfig, *, urls: dict[str, str] | None = None,
                   models: dict[str, str] | None = None, **load_overrides: Any) -> SuiteConfig:
    """A copy with endpoint URLs/models and load settings replaced (command-line overrides)."""
    urls, models = urls or {}, models or {}
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
    load = dataclasses.replace(config.load, **load_changes)
    validate_load(load)
    return dataclasses.replace(config, endpoints=tuple(endpoints), load=load)


def redact(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """Replace every secret value in text with '***' (servers may echo keys in error bodies)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def known_secrets(config: SuiteConfig) -> list[str]:
    """The key values currently in the environment for the configured endpoints."""
    return [ep.api_key() for ep in config.endpoints if ep.api_key()]
