"""What the runs were made with: settings that differ between runs (config_mismatch warnings)
and the Test setup section's data."""

from __future__ import annotations

import json
from typing import Any

from .errors import WarningList
from .perrun import RunInfo
from .rundata import RunData

# Compared settings (a difference is a config_mismatch warning).
REQUEST_SETTINGS = ("max_tokens", "temperature", "ignore_eos")
LOAD_SETTINGS_IGNORED = ("repetitions",)


# A capacity search's probes differ in their level by design (analysis.capacity).
LOAD_SETTINGS_SEARCHED = ("stages", "rates")


def check_configs(runs: list[RunData], warnings: WarningList, *, capacity: bool = False) -> None:
    """Warn when runs combined or compared differ in settings that change the numbers (the
    probes of a capacity search may differ in their level)."""
    ignored = LOAD_SETTINGS_IGNORED + (LOAD_SETTINGS_SEARCHED if capacity else ())
    load_sig: dict[str, list[str]] = {}
    for r in runs:
        load = {k: v for k, v in r.load.items() if k not in ignored}
        load_sig.setdefault(json.dumps(load, sort_keys=True, default=str), []).append(r.name)
    if len(load_sig) > 1:
        loads = [json.loads(s) for s in load_sig]
        keys = sorted({k for l in loads for k in l if len({json.dumps(x.get(k), default=str)
                                                             for x in loads}) > 1})
        detail = "; ".join(f"{k}: " + ", ".join(sorted({json.dumps(x.get(k), default=str)
                                                         for x in loads})) for k in keys[:5])
        warnings.add("config_mismatch", f"runs were made with different load settings ({detail}); "
                     "figures combined across them are not like for like")
    per_label: dict[str, dict[str, set[str]]] = {}
    for r in runs:
        for ep in r.endpoints:
            cfg = r.endpoint_config(ep)
            if not cfg:
                continue
            d = per_label.setdefault(ep, {})
            d.setdefault("model", set()).add(json.dumps(cfg.get("model")))
            d.setdefault("extra_body", set()).add(json.dumps(cfg.get("extra_body"), sort_keys=True))
            d.setdefault("request", set()).add(json.dumps(cfg.get("request"), sort_keys=True))
    for ep, d in per_label.items():
        diff = [k for k, v in d.items() if len(v) > 1]
        if diff:
            warnings.add("config_mismatch", f"endpoint {ep}: its runs differ in "
                         + ", ".join(f"{k} ({' vs '.join(sorted(d[k]))})" for k in diff)
                         + "; repetitions combined across them are not like for like",
                         endpoint=ep)
    # Across endpoints: request settings that change the work asked of the server.
    settings: dict[str, dict[str, Any]] = {}
    for r in runs:
        for ep in r.endpoints:
            req = r.endpoint_config(ep).get("request") or {}
            for k in REQUEST_SETTINGS:
                if k in req:
                    settings.setdefault(k, {}).setdefault(ep, req[k])
    for k, by_ep in settings.items():
        if len({json.dumps(v) for v in by_ep.values()}) > 1:
            warnings.add("config_mismatch", f"endpoints are compared with different {k} ("
                         + ", ".join(f"{e}={v}" for e, v in by_ep.items())
                         + "); the comparison is not like for like")


def setup_summary(runs: list[RunData], infos: list[RunInfo], endpoints: list[str],
           models: dict[str, str]) -> dict[str, Any]:
    first = runs[0]
    eps = {}
    for ep in endpoints:
        for r in runs:
            cfg = r.endpoint_config(ep)
            if cfg:
                eps[ep] = {"model": cfg.get("model"), "base_url": cfg.get("base_url"),
                           "extra_body": cfg.get("extra_body"), "request": cfg.get("request"),
                           "metrics_url": cfg.get("metrics_url"),
                           "exporter_url": cfg.get("exporter_url")}
                break
        else:
            eps[ep] = {"model": models.get(ep)}
    hosts = sorted({json.dumps(r.manifest.host.to_json(), sort_keys=True) for r in runs})
    versions = sorted({json.dumps(r.manifest.versions.to_json(), sort_keys=True) for r in runs})
    campaigns = sorted({i.campaign for i in infos if i.campaign})
    return {"endpoints": eps, "load": first.load, "hosts": [json.loads(h) for h in hosts],
            "versions": [json.loads(v) for v in versions], "campaigns": campaigns,
            "runs": len(infos), "repetitions": sorted({i.repetition for i in infos})}
