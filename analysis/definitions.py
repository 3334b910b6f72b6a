"""Definitions the report and docs print: the method's terms, the SLO keys, the generated docs.

Record fields are defined in ``core.records.FIELD_DEFINITIONS``; the computed figures in the
metric catalogue (``analysis.catalogue.METRICS``); this module adds the method's terms
(``OTHER_DEFINITIONS``), the ``--slo`` keys, and writes the generated blocks of docs/report.md:
``python -m analysis.definitions docs/report.md``.
"""

from __future__ import annotations

from .catalogue import METRICS
from .outages import DOWN_WINDOW_DEFINITION
from .paired import PAIRED_MAX_PER_RUN
from .stats import PERCENTILE_METHOD


OTHER_DEFINITIONS: dict[str, str] = {
    "steady window": "[steady_unix, drain_unix) of a stage in stages.csv; requests are chosen by "
    "their phase field (phase == steady), metric samples by their timestamp inside the window. "
    "A stage stopped during its steady state (an interrupted run: drain_unix blank) ends at its "
    "end_unix, the stop; a stage stopped before it (steady_unix blank) has no window.",
    "run": "One Locust run (a run directory), identified by (campaign, run_id) from its "
    "manifest: run_id is the directory's name, so two campaigns can both have r01-vllm. The "
    "report names a run campaign/run_id when its runs come from more than one campaign, else "
    "run_id; the same (campaign, run_id) found twice counts once.",
    "down window": DOWN_WINDOW_DEFINITION,
    "concurrency / level": "A stage's users (closed loop) or request rate (open loop).",
    "repetitions": "Runs of the same endpoint and stage combine into mean, sample standard "
    "deviation and a 95% Student-t interval over the per-run values (shown as mean +- half "
    "width); one run has no interval.",
    "change %": "(B / A - 1) x 100, B the endpoint compared, A the baseline (the first endpoint, "
    "or --baseline).",
    "real difference": "Per-request latencies (TTFT, E2E, TPOT p50): Mann-Whitney U p < 0.05 "
    "over the pooled steady requests and a 95% hierarchical-bootstrap CI of the ratio of medians "
    "(resampling runs, then up to 1000 requests per run, equal weight per run, 1000 resamples, "
    "seeded) that excludes 1. Per-run figures (throughput, means, utilization): Welch t-test "
    "p < 0.05 over per-repetition values, CI of the difference of means / the baseline mean; "
    "needs >= 2 runs per endpoint. Otherwise: not distinguishable from noise.",
    "paired A/B": "The runs of one repetition joined request by request on (stage, "
    "request_key): every endpoint got the same prompt, requested output length and (open loop) "
    "arrival offset for the same key. Completed steady requests pair; blank keys never do. Per "
    "endpoint, level and latency (TTFT, TTFAT, TPOT, E2E): the change is exp(median over pairs "
    "of log(B / A)) - 1, with the mean paired difference B - A in ms; 95% CI by a hierarchical "
    f"percentile bootstrap (repetitions with replacement, then up to {PAIRED_MAX_PER_RUN} pairs "
    "within each, "
    "--bootstrap resamples, seeded; one repetition: pairs only, request-level noise only). Real "
    "when the CI of the change excludes 0%, else no clear difference.",
    "percentiles": PERCENTILE_METHOD,
    "metric gaps": "A steady window has a gap when a scrape failed (scrape_up 0) or no sample "
    "arrived for longer than 2.5 scrape intervals; values use the samples present and a window "
    "with none shows n/a, never 0.",
}

SLO_FIELDS: dict[str, tuple[str, float]] = {
    # --slo key: (record column, factor from the record's seconds to the key's unit)
    "ttft_ms": ("ttft_s", 1000.0),
    "ttfat_ms": ("ttfat_s", 1000.0),
    "e2e_ms": ("e2e_s", 1000.0),
    "tpot_ms": ("tpot_s", 1000.0),
    "itl_ms": ("itl_mean_s", 1000.0),
}


def markdown_definitions() -> str:
    """The computed-figure and method definitions as Markdown (docs/report.md embeds this)."""
    lines = ["| figure | key | unit | definition |", "| --- | --- | --- | --- |"]
    for m in METRICS.values():
        lines.append(f"| {m.label} | `{m.key}` | {m.unit} | {m.definition} |")
    lines += ["", "| term | definition |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in OTHER_DEFINITIONS.items()]
    return "\n".join(lines) + "\n"


def markdown_warnings() -> str:
    """The warning codes as Markdown (docs/report.md embeds this)."""
    from .errors import WARNING_CODES
    lines = ["| warning | meaning |", "| --- | --- |"]
    lines += [f"| `{k}` | {v} |" for k, v in WARNING_CODES.items()]
    return "\n".join(lines) + "\n"


def sync_docs(path) -> bool:
    """Rewrite the generated blocks of a Markdown file (docs/report.md); True on any change."""
    from pathlib import Path
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    new = text
    for name, body in (("definitions", markdown_definitions()), ("warnings", markdown_warnings())):
        begin, end = f"<!-- generated:{name}:begin -->", f"<!-- generated:{name}:end -->"
        if begin in new and end in new:
            head, rest = new.split(begin, 1)
            _, tail = rest.split(end, 1)
            new = f"{head}{begin}\n{body}{end}{tail}"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    import sys
    if len(sys.argv) > 1:   # python -m analysis.definitions docs/report.md
        print("updated" if sync_docs(sys.argv[1]) else "up to date")
    else:
        print(markdown_definitions(), end="")
