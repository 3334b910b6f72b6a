"""The stub OpenAI-compatible streaming server's command line; the code lives in ``bench.stub``.

    python -m bench.stub_server --host 127.0.0.1 --port 0 --ttft-ms 50 --itl-ms 20 --tokens 128 \\
        [--reasoning-tokens 0] [--processes 1] [--api-key KEY] [--model stub-model] \\
        [--fault NAME --fault-rate 1.0] [--stall-s 30] [--fault-after 3]

Importing it gives the package's API (``run_stub_process``, ``start_stub_in_thread``, ...).
"""
from __future__ import annotations

import sys

from bench.stub import (FAULTS, RequestPlan, StubConfig, StubHandle, StubServer, main, plan_request,
                        run_stub_process, start_stub_in_thread, stop_stub_process)

__all__ = ["FAULTS", "RequestPlan", "StubConfig", "StubServer", "StubHandle", "plan_request",
           "start_stub_in_thread", "run_stub_process", "stop_stub_process", "main"]

if __name__ == "__main__":
    sys.exit(main())
