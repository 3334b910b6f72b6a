"""llm-report: build the comparison report from run directories.

    python -m analysis RUN_DIR_OR_PARENT [...] [--out DIR] [--at 16] [--slo ttft_ms=200]
                       [--baseline LABEL] [--prometheus URL] [--prom-endpoint-label LABEL=INSTANCE]

Exit status: 0 report written; 2 the input cannot be used (one line on stderr says what to do);
1 an internal error (a bug: rerun with --debug for the traceback and report it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from core import secrets
from .errors import AnalysisError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llm-report",
        description="Build the comparison report (HTML with plots, Markdown, CSV/JSON tables, "
        "summary.json) from one or more run directories written by the load test. Repetitions "
        "of the same endpoint and stage are combined; endpoints are compared stage by stage.",
        epilog="Example: llm-report results/compare-2026-11-27 --at 16 --slo ttft_ms=200 "
        "--slo tpot_ms=50")
    p.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_PARENT",
                   help="run directories (each holds manifest.json) or folders holding them")
    p.add_argument("--out", metavar="DIR",
                   help="report directory (default: <common parent of the runs>/report)")
    p.add_argument("--at", type=float, default=16.0, metavar="N",
                   help="concurrency (or rate) of the 'At N' table; the nearest level is used "
                   "(default 16)")
    p.add_argument("--slo", action="append", default=[], metavar="KEY=VALUE",
                   help="an SLO for goodput, repeatable: ttft_ms, ttfat_ms, e2e_ms, tpot_ms, "
                   "itl_ms (e.g. --slo ttft_ms=200 --slo tpot_ms=50); default none: goodput = "
                   "throughput")
    p.add_argument("--baseline", metavar="LABEL",
                   help="endpoint the others are compared with (default: the first endpoint)")
    p.add_argument("--prometheus", metavar="URL",
                   help="read metric samples for each run's window from this Prometheus server "
                   "(query_range, step 1 s) instead of the runs' metrics.csv")
    p.add_argument("--prom-endpoint-label", action="append", default=[],
                   metavar="LABEL=INSTANCE",
                   help="with --prometheus: series whose instance label is INSTANCE (host:port) "
                   "belong to endpoint LABEL; repeatable (default: the endpoint label on the "
                   "series, else the host:port of the endpoint's metrics_url/exporter_url)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the bootstrap resampling (default 0; reports are reproducible)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples per comparison (default 1000)")
    p.add_argument("--note", action="append", default=[], metavar="TEXT",
                   help="a note printed first in the report (repeatable), e.g. what the test setup means")
    p.add_argument("--quiet", action="store_true", help="no progress lines, no summary")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    return p


def default_out(run_dirs: list[Path]) -> Path:
    parents = [str(Path(d).resolve().parent) for d in run_dirs]
    return Path(os.path.commonpath(parents)) / "report"


def _prom_map(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise AnalysisError(f"--prom-endpoint-label {item!r}: write it as LABEL=INSTANCE, "
                                "e.g. A=10.0.0.5:9411")
        label, inst = item.split("=", 1)
        out[inst.strip()] = label.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    """Everything printed passes through core.secrets' scrubber (notes and server messages
    could carry a key)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = secrets.ScrubbingStream(out), secrets.ScrubbingStream(err)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = out, err


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    progress = None if args.quiet else (lambda s: print(f"llm-report: {s}", file=sys.stderr,
                                                       flush=True))
    try:
        from .build import Options, analyse, discover
        from .compute import parse_slos
        from .report import summary_text, write_report

        if args.bootstrap < 100:
            raise AnalysisError("--bootstrap: use at least 100 resamples")
        opts = Options(at=args.at, slos=parse_slos(args.slo), baseline=args.baseline,
                       prometheus=args.prometheus, prom_map=_prom_map(args.prom_endpoint_label),
                       seed=args.seed, n_boot=args.bootstrap, notes=args.note,
                       progress=progress)
        t0 = time.monotonic()
        result = analyse(args.paths, opts)
        out = Path(args.out) if args.out else default_out(discover(args.paths))
        try:
            paths = write_report(result, out, progress=progress)
        except OSError as exc:
            raise AnalysisError(f"cannot write the report to {out}: {exc.strerror or exc}; "
                                "pass --out DIR with a writable folder") from None
        if progress:
            progress(f"done in {time.monotonic() - t0:.1f} s")
        if not args.quiet:
            print(summary_text(result, paths))
        return 0
    except AnalysisError as exc:
        print(f"llm-report: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llm-report: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, unless --debug
        if args.debug:
            raise
        print(f"llm-report: internal error: {type(exc).__name__}: {exc} (rerun with --debug for "
              "the traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
