"""``make demo``: the whole comparison on this machine, no GPU needed.

Sets up vLLM's CPU build and two tiny random models (cached after the first time), starts a
vLLM server for each with an exporter beside it, runs a short concurrency sweep against each
(alternating, repeated), builds the report and prints where it is. Everything started here is
stopped on success, failure and Ctrl-C.

Fairness on a small machine: the load generator shares the CPU with the servers. The runs
alternate, so only one server is under load at a time (the idle one uses well under 1% of a
core), each vLLM server gets one OpenMP thread, and every run records the load generator's own
CPU so the report can flag a saturated generator.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from deploy.local import servers as ls
from locustfiles import campaign

TINY_NOTE = ("these are two tiny RANDOM models (2 layers, hidden size 128) served by vLLM's CPU "
             "build on this machine, sharing its cores with the load generator: the numbers show "
             "the suite working end to end, not how Qwen3 or Qwen2 perform. There is no GPU, so "
             "the GPU tables are empty and the server process CPU and memory stand in for them.")

# About 33 s per run, 6 runs (3 repetitions x 2 endpoints, alternating): the whole demo,
# installs included, fits in about 10 minutes on 2 cores. Three repetitions, not two: the CIs
# across repetitions need them (with two, every interval is wider than its mean). For figures
# worth comparing, run longer: make demo ARGS="-- --steady-s 30 --repetitions 5"
DEMO_REPETITIONS = 3
DEMO_LOAD = ["--stages", "1,4,8,16,32", "--ramp-s", "1", "--warmup-s", "1", "--steady-s", "4",
             "--drain-s", "0.5", "--repetitions", str(DEMO_REPETITIONS)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    p.add_argument("--results-dir", default="results")
    p.add_argument("campaign_args", nargs="*",
                   help="extra arguments for the campaign, e.g. --repetitions 5 (after --)")
    args = p.parse_args(argv)
    started = time.monotonic()
    started_unix = time.time() - 1

    def step(n: int, text: str) -> None:
        print(f"\n[demo {n}/4, {time.monotonic() - started:.0f}s] {text}", flush=True)

    step(1, "vLLM CPU build and two tiny models (first time: about 4 minutes, then cached)")
    try:
        ls.setup()
        step(2, "starting the two vLLM servers, an exporter beside each (1-2 minutes)")
        with ls.local_servers(timeout_s=300, run_setup=False) as servers:
            names = ", ".join(f"{s.label} at {s.base_url}" for s in servers)
            step(3, f"load test: {names}; stages 1, 4, 8, 16, 32 users, {DEMO_REPETITIONS} "
                    "repetitions, alternating endpoints, the same requests to each (about 4 "
                    "minutes); the summary ends with the paired verdicts")
            code = campaign.main(["--label", "demo", "--results-dir", args.results_dir,
                                  "--stop-timeout", "20", "--note", TINY_NOTE, *DEMO_LOAD,
                                  *args.campaign_args])
    except ls.LocalServerError as exc:
        print(f"\ndemo: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted; servers stopped", file=sys.stderr)
        return 130
    step(4, f"done ({'ok' if code == 0 else f'exit code {code}'}); servers stopped")
    print("Open the report's report.html (path above) in a browser; report.md has the tables.")
    for line in paired_epilogue(Path(args.results_dir), started_unix):
        print(line)
    return code


def paired_epilogue(results_dir: Path, since_unix: float) -> list[str]:
    """The demo's last words: the paired verdicts of the report it just built (its summary.json),
    or nothing when there is no report (the campaign failed, or ran a capacity search)."""
    made = [d for d in results_dir.glob("*-demo") if d.is_dir() and d.stat().st_mtime >= since_unix]
    if not made:
        return []
    summary_path = max(made, key=lambda d: d.stat().st_mtime) / "report" / "summary.json"
    try:
        paired = json.loads(summary_path.read_text())["paired"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not paired.get("headline"):
        return [f"Paired A/B: {paired.get('reason') or 'no verdict'}"]
    level = paired["headline_level"]
    unit = "req/s" if paired.get("mode") in ("open", "trace") else "users"
    return ["", f"Paired A/B at {level:g} {unit}: the same requests sent to both models "
            f"({summary_path.parent}/report.md, section Paired A/B):"] + [
                f"  {text}" for text in paired["headline"]]


if __name__ == "__main__":
    sys.exit(main())
