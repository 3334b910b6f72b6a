"""Errors and named warnings of the analysis.

An ``AnalysisError`` is input the report cannot be built from: the CLI prints its one line and
exits 2. A ``ReportWarning`` is something the reader must know; it is printed at the top of the
report, in summary.json and in the terminal summary. Codes are stable (README.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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
    "incomplete_run": "The manifest says the run did not complete (status running or failed, or "
    "interrupted: stopped early by Ctrl-C/SIGTERM, with the time into the run when it stopped), "
    "or its stage timeline lacks end times. A stage stopped before its steady state has no "
    "figures; one stopped during it is measured from steady_unix to the stop (end_unix).",
    "skipped_run": "A directory was left out of the report (unreadable, not a run directory of "
    "this suite, another schema version, no records, or the same run (campaign, run_id) found "
    "twice).",
    "single_run": "Only one run per endpoint: no spread across repetitions, confidence intervals "
    "cover request-level noise only.",
    "counter_reset": "A counter went backwards inside a window (server or exporter restarted); "
    "the increase was counted from the restart.",
    "missing_stage_timeline": "stages.csv is missing or lacks a stage; its steady window was "
    "estimated from the records' start times.",
    "unmapped_series": "Prometheus series that could not be mapped to an endpoint were ignored.",
    "worker_lost": "A worker process of a distributed run stopped sending records before the run "
    "ended (its host died or its network went): the records it sent until then are kept; what it "
    "did after that is missing, and its users moved to the other workers (or the load dropped). "
    "The manifest's workers[] names it, with when its last batch arrived.",
    "worker_clock": "A worker's clock was more than 10 ms off the master's: its requests' start "
    "times (and so which stage window they fall in) are shifted by that much; durations are not "
    "affected.",
    "endpoint_down": "An endpoint failed every request for at least 1 s (a down window, "
    "analysis/outages.py). Clients retrying a down endpoint fail fast and often, so the "
    "per-request error rate overstates how long it was down: read failures per second, down "
    "share and the Endpoint down table.",
}


class AnalysisError(Exception):
    """Input the report cannot be built from; the message says what to do (exit 2)."""


class NoRecordsError(AnalysisError):
    """A run directory whose records.csv holds no record (missing, 0 bytes or header only)."""


@dataclass(frozen=True)
class ReportWarning:
    code: str
    message: str
    run_id: str = ""
    endpoint: str = ""
    campaign: str = ""      # with run_id, identifies the run (analysis.runref)

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        return f"[{self.code}] {self.message}"


class WarningList(list):
    """A list of ReportWarning that drops exact duplicates."""

    def add(self, code: str, message: str, run: Any = "", endpoint: str = "") -> None:
        """run: an analysis.runref.RunRef (or a bare run id)."""
        assert code in WARNING_CODES, code
        run_id, campaign = getattr(run, "run_id", run), getattr(run, "campaign", "")
        w = ReportWarning(code, message, str(run_id or ""), endpoint, str(campaign or ""))
        if w not in self:
            self.append(w)
