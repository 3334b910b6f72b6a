"""Support shared by every test folder: free ports, waits, stub servers, campaign and Locust runs.

Imported as ``support`` (``from support import free_port, wait_until``): the ``pythonpath``
setting in pyproject.toml's [tool.pytest.ini_options] puts the repository root, then tests/, on
sys.path. The root comes first so that tests/analysis and tests/exporters, which are not
packages, can never stand in for the real ``analysis`` and ``exporters`` packages.

- ``free_port``: from ``bench.netutil``, which the benchmarks use too (they run without tests/).
- ``support.wait``: ``wait_until``, the one polling loop, and its ``WaitTimeout``.
- ``support.stub``: ``StubProcesses``, stub servers as subprocesses, always stopped. The stub
  itself is ``bench.stub`` (``start_stub_in_thread`` for one in this process).
- ``support.campaign``: endpoint configs, campaign and Locust runs, records written so far.
- ``support.synth``: synthetic run directories with known answers (``from support import synth``).
"""
from __future__ import annotations

from bench.netutil import free_port
from support.campaign import ROOT, records_written, run_campaign, start_locust, write_config
from support.stub import StubProcesses
from support.wait import WaitTimeout, wait_until

__all__ = ["ROOT", "StubProcesses", "WaitTimeout", "free_port", "records_written", "run_campaign",
           "start_locust", "wait_until", "write_config"]
