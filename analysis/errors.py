"""Errors and named warnings of the analysis.

An ``AnalysisError`` is input the report cannot be built from: the CLI prints its one line and
exits 2. A ``ReportWarning`` is something the reader must know; it is printed at the top of the
report, in summary.json and in the terminal summary. Codes are stable (README.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

WARNING_CODES: dict[str, str] = {
    "saturated_load_generator": "The load generator's CPU was saturated during the run "
    "(manifest load_generator.saturated): its latencies are inflated and are not the server's.",
    "generator_late": "The load generator was late in a stage: its send-lag p99 or event-loop "
    "lag p99 exceeded the larger of 1% of the stage's TTFT p50 and 2 ms (analysis/health.py). "
    "The load offered was not the load planned: the stage's latency figures are not to be trusted.",
    "lockstep": "More than 10% of a stage's steady requests left within 1 ms of two or more others: "
    "bursts no real traffic has, which change what the server does.",
    "tokens_from_chunks": "Some token counts were counted from streamed chunks, not the server's "
    "usage (tokens_from_usage False); one chunk can carry several tokens, so token figures are "
    "lower bounds.",
    "metrics_gap": "Metric samples are missing inside a steady window (scrape_up 0 or no sample "
    "for longer than 2.5 scrape intervals); figures use the samples present, gaps stay gaps.",
    "no_metrics": "An endpoint has a metrics/exporter URL in its config but no samples of that "
    "source in the run.",
    "config_mismatch": "Runs combined or compared were made with different settings.",
    "record_count_mismatch": "The number of records differs from the manifest's records_written "
    "or from Locust's CHAT request count.",
    "empty_stage": "A stage has no steady-state requests for an endpoint; its figures are n/a.",
    "truncated_file": "A file ends mid-line or holds malformed rows (a crashed run); the "
    "incomplete rows were skipped.",
    "incomplete_run": "The manifest says the run did not complete (status running or failed), or "
    "its stage timeline lacks end times.",
    "skipped_run": "A directory was left out of the report (unreadable, another schema version, "
    "no records).",
    "single_run": "Only one run per endpoint: no spread across repetitions, confidence intervals "
    "cover request-level noise only.",
    "counter_reset": "A counter went backwards inside a window (server or exporter restarted); "
    "the increase was counted from the restart.",
    "missing_stage_timeline": "stages.csv is missing or lacks a stage; its steady window was "
    "estimated from the records' start times.",
    "unmapped_series": "Prometheus series that could not be mapped to an endpoint were ignored.",
}


class AnalysisError(Exception):
    """Input the report cannot be built from; the message says what to do (exit 2)."""


@dataclass(frozen=True)
class ReportWarning:
    code: str
    message: str
    run_id: str = ""
    endpoint: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        return f"[{self.code}] {self.message}"


class WarningList(list):
    """A list of ReportWarning that drops exact duplicates."""

    def add(self, code: str, message: str, run_id: str = "", endpoint: str = "") -> None:
        assert code in WARNING_CODES, code
        w = ReportWarning(code, message, run_id, endpoint)
        if w not in self:
            self.append(w)
