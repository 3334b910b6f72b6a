"""Trace replay (``[load] mode = "trace"``): read an arrival schedule, plan it, build its requests.

A trace is JSONL, one arrival per line, in the shape of the public Mooncake traces::

    {"timestamp": 1520, "input_length": 812, "output_length": 64, "hash_ids": [3, 4]}

``timestamp`` is in milliseconds; times count from the trace's first arrival, so a slice cut
from the middle of a long trace starts at once. Aliases: ``timestamp_ms``; seconds as ``t_s``,
``arrival_s`` or ``time_s``; ``input_tokens``/``prompt_tokens`` for ``input_length`` and
``output_tokens``/``completion_tokens`` for ``output_length``. Other keys (Mooncake's
``hash_ids``: which blocks of the prompt repeat) are ignored: every replayed prompt is a fresh
synthetic one, so no two requests share a prefix. Lines out of time order are replayed in time
order (the count is reported). A bad line stops the run before any load, naming file:line.

Arrival ``i`` (in time order, from 0) of a trace is sent ``offset_i / trace_time_scale`` seconds
after the stage's trace start (its start plus ``ramp_s``). With several worker processes each
generator sends the arrivals with ``i % generators == its index``. Its request key is
``<stage>/trace/<line>`` (``line``: the file's line, 1-based, also the record's
``dataset_item``), so every arm gets the same request for the same arrival.

The Azure LLM inference traces are CSV (``TIMESTAMP,ContextTokens,GeneratedTokens``)::

    python -m locustfiles.traces convert-azure AzureLLMInferenceTrace_conv.csv trace.jsonl

and ``python -m locustfiles.traces sample datasets/sample-trace.jsonl`` writes the shipped sample.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from locustfiles.datasets import existing_file
from locustfiles.prompts import (ConfigPromptError, PlannedRequest,
                                 synthetic_prompt)

# (key, seconds per unit): the arrival time's accepted names
TIME_KEYS = (("timestamp", 1e-3), ("timestamp_ms", 1e-3), ("t_s", 1.0), ("arrival_s", 1.0),
             ("time_s", 1.0))
INPUT_KEYS = ("input_length", "input_tokens", "prompt_tokens")
OUTPUT_KEYS = ("output_length", "output_tokens", "completion_tokens")
KEY_STREAM = "trace"   # the stream part of a trace request's key: <stage>/trace/<line>
SAMPLE_SEED = 13
SAMPLE_PATH = Path(__file__).resolve().parents[1] / "datasets" / "sample-trace.jsonl"
SHAPE_HINT = ('write one JSON object per line, e.g. {"timestamp": 1520, "input_length": 812, '
              '"output_length": 64} (timestamp in ms from the trace start; see docs/workloads.md)')


class TraceError(ConfigPromptError):
    """The trace file cannot be replayed; the message names the file (and line) and the fix.
    A ConfigPromptError, so every place that refuses a bad prompts file refuses it too."""


@dataclass(frozen=True)
class Arrival:
    """One line of the trace: when it arrives (seconds after the first arrival, unscaled) and
    the prompt and output lengths it asks for."""

    line: int            # the file's line, 1-based
    offset_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Trace:
    """A trace file's arrivals, in time order."""

    path: str
    arrivals: tuple[Arrival, ...]
    out_of_order: int = 0    # lines whose time was earlier than the line before them

    @property
    def span_s(self) -> float:
        """From the first arrival to the last, unscaled."""
        return self.arrivals[-1].offset_s if self.arrivals else 0.0

    def scaled_span_s(self, time_scale: float) -> float:
        return self.span_s / time_scale

    def mean_rate(self, time_scale: float) -> float:
        """Arrivals per second of replay (arrivals over the scaled span, to 3 significant
        digits): the stage's level on the report's req/s axis."""
        return float(f"{len(self.arrivals) / self.scaled_span_s(time_scale):.3g}")

    def share(self, index: int, generators: int) -> list[Arrival]:
        """The arrivals one of ``generators`` generators sends: every generators-th one."""
        return list(self.arrivals[index % generators::generators])

    def summary(self, time_scale: float, max_tokens: int) -> str:
        """What the campaign prints about the trace: size, span, rate, lengths, and notes on
        what is replayed otherwise than the file reads."""
        inputs = [a.input_tokens for a in self.arrivals]
        outputs = [a.output_tokens for a in self.arrivals]
        text = (f"trace: {len(self.arrivals)} arrivals over {self.scaled_span_s(time_scale):.1f}s"
                f"{f' (x{time_scale:g})' if time_scale != 1 else ''}, mean "
                f"{self.mean_rate(time_scale):g} req/s; input {min(inputs)}-{max(inputs)} "
                f"tokens, output {min(outputs)}-{max(outputs)} from {self.path}")
        if self.out_of_order:
            text += (f"\n  note: {self.out_of_order} line(s) out of time order: replayed in "
                     "time order")
        above = sum(1 for n in outputs if n > max_tokens)
        if above:
            text += (f"\n  note: {above} arrival(s) ask for more output than [request] max_tokens "
                     f"= {max_tokens} (up to {max(outputs)}): sent as the trace says")
        return text


def _number(item: dict[str, Any], key: str, where: str) -> float:
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TraceError(f"{where}: {key} = {json.dumps(value)} is not a number; {SHAPE_HINT}")
    return float(value)


def _one_of(item: dict[str, Any], keys: Iterable[str], what: str, where: str) -> str:
    found = [k for k in keys if k in item]
    if not found:
        raise TraceError(f"{where}: no {what} (one of {', '.join(keys)}); {SHAPE_HINT}")
    if len(found) > 1:
        raise TraceError(f"{where}: both {found[0]} and {found[1]} give the {what}: keep one")
    return found[0]


def _length(item: dict[str, Any], keys: tuple[str, ...], what: str, where: str) -> int:
    key = _one_of(item, keys, what, where)
    value = _number(item, key, where)
    if value < 1 or value != int(value):
        raise TraceError(f"{where}: {key} = {json.dumps(item[key])}: give a whole number of "
                         "tokens, at least 1")
    return int(value)


def parse_arrival(item: Any, line: int, where: str) -> tuple[int, float, int, int]:
    """(line, time in seconds, input tokens, output tokens) of one JSON line."""
    if not isinstance(item, dict):
        raise TraceError(f"{where}: expected a JSON object; {SHAPE_HINT}")
    time_key = _one_of(item, [k for k, _ in TIME_KEYS], "arrival time", where)
    seconds = _number(item, time_key, where) * dict(TIME_KEYS)[time_key]
    if seconds < 0:
        raise TraceError(f"{where}: {time_key} = {json.dumps(item[time_key])} is negative; "
                         "give the time since the trace's start")
    return (line, seconds, _length(item, INPUT_KEYS, "input length", where),
            _length(item, OUTPUT_KEYS, "output length", where))


def read_trace(path: str | Path) -> Trace:
    """Read and check a trace file (TraceError names file:line and what to change)."""
    p = existing_file(path, "trace file", "trace_file", TraceError)
    rows: list[tuple[int, float, int, int]] = []
    try:
        with open(p, encoding="utf-8") as fh:
            for number, text in enumerate(fh, 1):
                text = text.strip()
                if not text:
                    continue
                where = f"trace file {p}:{number}"
                try:
                    item = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise TraceError(f"{where}: not JSON ({exc.msg}); {SHAPE_HINT}") from None
                rows.append(parse_arrival(item, number, where))
    except UnicodeDecodeError as exc:
        raise TraceError(f"trace file {p}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise TraceError(f"trace file {p}: cannot be read ({exc.strerror})") from None
    if len(rows) < 2:
        raise TraceError(f"trace file {p}: {len(rows)} arrival(s); a trace needs at least two "
                         f"(its rate is arrivals over their span); {SHAPE_HINT}")
    out_of_order = sum(1 for a, b in zip(rows, rows[1:]) if b[1] < a[1])
    rows.sort(key=lambda r: (r[1], r[0]))   # stable in time: equal times keep the file's order
    first = rows[0][1]
    if rows[-1][1] == first:
        raise TraceError(f"trace file {p}: every arrival has the same time: nothing to replay "
                         "over time (spread the timestamps)")
    return Trace(str(p), tuple(Arrival(line, t - first, n_in, n_out)
                               for line, t, n_in, n_out in rows), out_of_order)


TRACE_END_MARGIN_S = 0.25


def trace_windows(trace: Trace, time_scale: float, warmup_s: float) -> tuple[float, float]:
    """(warmup_s, steady_s) of a trace stage: arrivals in the first warmup_s of scaled trace
    time are warmup, the rest steady. The steady window ends a moment after the last arrival
    (TRACE_END_MARGIN_S), so the shape's tick never turns it into drain before it is sent."""
    span = trace.scaled_span_s(time_scale)
    if span <= warmup_s:
        raise TraceError(f"trace file {trace.path}: it lasts {span:.1f}s at trace_time_scale = "
                         f"{time_scale:g}, within warmup_s = {warmup_s:g}: no arrival would be "
                         "steady; lower warmup_s (--warmup-s 0) or trace_time_scale")
    return warmup_s, span - warmup_s + TRACE_END_MARGIN_S


def check_trace(config: Any) -> str:
    """Read the configured trace (mode trace) and check it fits the plan: what to print about
    it, or "" when the mode is not trace. TraceError otherwise."""
    load = config.load
    if load.mode != "trace":
        return ""
    trace = read_trace(load.trace_file)
    trace_windows(trace, load.trace_time_scale, load.warmup_s)
    return trace.summary(load.trace_time_scale,
                         min(ep.request.max_tokens for ep in config.endpoints))


def trace_key(stage: int, line: int) -> str:
    return f"{stage}/{KEY_STREAM}/{line}"


@dataclass(frozen=True)
class TraceRequests:
    """What each trace arrival asks for, by key: a synthetic prompt of about its input length
    (seeded by the key: the same in every arm) and its output length."""

    seed: int
    words_per_token: float
    by_line: dict[int, Arrival]

    @classmethod
    def of(cls, trace: Trace, seed: int, words_per_token: float) -> TraceRequests:
        return cls(seed, words_per_token, {a.line: a for a in trace.arrivals})

    def plan(self, key: str) -> PlannedRequest:
        arrival = self.by_line[int(key.rsplit("/", 1)[1])]
        words = max(1, round(arrival.input_tokens * self.words_per_token))
        rng = random.Random(f"{self.seed}/prompt/{key}")
        return PlannedRequest([{"role": "user", "content": synthetic_prompt(rng, words)}],
                              arrival.output_tokens, dataset_item=arrival.line)


# ---- the shipped sample and the Azure converter ----

def sample_trace(seed: int = SAMPLE_SEED, span_s: float = 90.0) -> list[dict[str, int]]:
    """A small Mooncake-shaped trace for the tiny CPU models: calm stretches (~1 req/s) and
    bursts (~6 req/s for a few seconds), lognormal prompt and output lengths (medians 160 and
    32 tokens, long tails cut to fit a 1024-token context)."""
    rng = random.Random(seed)
    lines, t, burst_until, next_burst = [], 0.0, -1.0, rng.uniform(8, 15)
    while True:
        if t >= next_burst:
            burst_until, next_burst = t + rng.uniform(2, 5), t + rng.uniform(12, 25)
        t += rng.expovariate(6.0 if t < burst_until else 1.0)
        if t > span_s:
            return lines
        prompt = round(rng.lognormvariate(math.log(160), 0.7))
        output = round(rng.lognormvariate(math.log(32), 0.6))
        lines.append({"timestamp": round(t * 1000), "input_length": min(700, max(16, prompt)),
                      "output_length": min(200, max(4, output))})


def write_jsonl(lines: Iterable[dict[str, Any]], out: Path) -> int:
    n = 0
    with open(out, "w", encoding="utf-8") as fh:
        for item in lines:
            fh.write(json.dumps(item) + "\n")
            n += 1
    return n


def _azure_seconds(text: str, where: str) -> float:
    """A TIMESTAMP cell: a date-time (``2023-11-16 18:15:46.6805900``) or plain seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    date, _, fraction = text.strip().partition(".")
    try:
        whole = datetime.fromisoformat(date).timestamp()
    except ValueError:
        raise TraceError(f"{where}: TIMESTAMP {text!r} is neither a date-time nor "
                         "seconds") from None
    return whole + (float(f"0.{fraction}") if fraction.isdigit() else 0.0)


def convert_azure(source: Path, out: Path) -> int:
    """An Azure LLM inference trace (CSV: TIMESTAMP, ContextTokens, GeneratedTokens) as a trace
    file: ms from its first row. Returns the arrivals written."""
    rows = []
    with open(source, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or ())
        if missing:
            raise TraceError(f"{source}: no column {', '.join(sorted(missing))}; expected the "
                             "Azure trace's header TIMESTAMP,ContextTokens,GeneratedTokens")
        for number, row in enumerate(reader, 2):
            where = f"{source}:{number}"
            try:
                n_in, n_out = int(row["ContextTokens"]), int(row["GeneratedTokens"])
            except (TypeError, ValueError):
                raise TraceError(f"{where}: ContextTokens and GeneratedTokens must be whole "
                                 "numbers") from None
            rows.append((_azure_seconds(row["TIMESTAMP"] or "", where), max(1, n_in),
                         max(1, n_out)))
    if not rows:
        raise TraceError(f"{source}: no rows under the header")
    first = min(t for t, _, _ in rows)
    return write_jsonl(({"timestamp": round((t - first) * 1000, 3), "input_length": n_in,
                         "output_length": n_out} for t, n_in, n_out in rows), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m locustfiles.traces",
                                     description="Trace files for [load] mode = \"trace\".")
    commands = parser.add_subparsers(dest="command", required=True)
    azure = commands.add_parser("convert-azure", help="an Azure LLM inference trace (CSV) as "
                                "a trace file (JSONL)")
    azure.add_argument("source", type=Path)
    azure.add_argument("out", type=Path)
    sample = commands.add_parser("sample", help="write the seeded sample trace")
    sample.add_argument("out", type=Path, nargs="?", default=SAMPLE_PATH)
    check = commands.add_parser("check", help="read a trace file and summarise it")
    check.add_argument("trace", type=Path)
    check.add_argument("--trace-time-scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "convert-azure":
            n = convert_azure(args.source, args.out)
            print(f"{n} arrivals written to {args.out}")
        elif args.command == "sample":
            n = write_jsonl(sample_trace(), args.out)
            print(f"{n} arrivals written to {args.out}")
        else:
            print(read_trace(args.trace).summary(args.trace_time_scale, sys.maxsize))
    except (TraceError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
