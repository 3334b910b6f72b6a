"""The campaign with remote workers on separate network stacks (Linux network namespaces).

Two worker "hosts" are network namespaces behind veth links on a bridge that the test creates in
the root namespace (10.231.N.0/24, N from the test's pid) and removes at the end, whatever
happens. The stub server and the campaign's master listen on the bridge's address in the root
namespace; each host runs ``python -m locustfiles.remote_worker``, which takes each run's config
from the master and reconnects between runs. Run 1 checks the shape of the run directory, the
record count and both hosts' records; in run 2 one host dies mid-run (its processes killed, its
link cut): the run finishes on the other, keeps what arrived, and names the loss.

Needs root (CAP_NET_ADMIN) and iproute2's ``ip netns``; without them the test says so and is
skipped (in CI, where the set-up runs as root, it fails instead).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from core.rundir.records import RECORD_FIELDS
from support import ROOT, free_port, wait_until, write_config
from support.stub import StubProcesses

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

GOLDEN_RUN = ROOT / "tests" / "core" / "golden" / "locust" / "results" / "STAMP-golden" / "runs" / "r01-A"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


class Hosts:
    """A bridge in the root namespace and one namespace per worker host, removed on close."""

    def __init__(self, count: int) -> None:
        tag = os.getpid() % 200 + 20
        self.bridge = f"llmbr{tag}"
        self.subnet = f"10.231.{tag}"
        self.master_address = f"{self.subnet}.1"
        self.names = [f"llmhost{tag}-{i}" for i in range(count)]
        self.veths = [f"llmv{tag}-{i}" for i in range(count)]

    def create(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.master_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (ns, veth) in enumerate(zip(self.names, self.veths)):
            inner = f"{veth}i"
            _ip("netns", "add", ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", ns, "addr", "add", f"{self.subnet}.{i + 2}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def pids(self, ns: str) -> set[int]:
        out = _ip("netns", "pids", ns, check=False).stdout.split()
        return {int(p) for p in out}

    def kill(self, ns: str) -> None:
        for pid in self.pids(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        for ns, veth in zip(self.names, self.veths):
            self.kill(ns)
            _ip("link", "del", veth, check=False)
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.bridge, check=False)


def _namespaces_or_skip(hosts: Hosts) -> None:
    why = ""
    if os.geteuid() != 0:
        why = "needs root (CAP_NET_ADMIN) to create network namespaces"
    elif shutil.which("ip") is None:
        why = "needs iproute2's ip"
    else:
        try:
            hosts.create()
            return
        except subprocess.CalledProcessError as exc:
            hosts.close()
            why = f"cannot create network namespaces here: {exc.stderr.strip()}"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def _worker_pids_by_host(hosts: Hosts, records: pd.DataFrame) -> dict[str, set[str]]:
    """Which records' worker ids ran in which namespace (worker = host:pid)."""
    out = {}
    for ns in hosts.names:
        pids = {str(p) for p in hosts.pids(ns)}
        out[ns] = {w for w in set(records["worker"]) if w.rsplit(":", 1)[-1] in pids}
    return out


def test_a_campaign_on_workers_in_two_network_namespaces_and_one_dies(tmp_path):
    hosts = Hosts(2)
    _namespaces_or_skip(hosts)
    stubs = StubProcesses()
    campaign = None
    workers: list[subprocess.Popen] = []
    logs = []
    try:
        url = stubs(host=hosts.master_address, ttft_ms=20, itl_ms=5)
        cfg = write_config(tmp_path / "ep.json",
                           [{"label": "A", "base_url": url, "model": "stub-model"}],
                           load={"stages": [4], "ramp_s": 1.0, "warmup_s": 1.0, "steady_s": 9.0,
                                 "drain_s": 1.0, "repetitions": 2})
        master_port, config_port = free_port(), free_port()
        for ns in hosts.names:
            log = open(tmp_path / f"{ns}.log", "wb")
            logs.append(log)
            workers.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "locustfiles.remote_worker",
                 "--master-host", hosts.master_address, "--master-port", str(master_port),
                 "--config-port", str(config_port), "--runs", "2"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        out = open(tmp_path / "campaign.out", "w")
        logs.append(out)
        campaign = subprocess.Popen(
            [sys.executable, "-m", "locustfiles.campaign", "--endpoints-file", str(cfg),
             "--results-dir", str(tmp_path / "results"), "--no-preflight",
             "--expect-workers", "2", "--master-bind-host", hosts.master_address,
             "--master-bind-port", str(master_port), "--llm-metrics-port", str(config_port),
             "--expect-workers-max-wait", "60", "--stop-timeout", "5"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

        def campaign_dir() -> Path | None:
            found = list((tmp_path / "results").glob("*-compare"))
            return found[0] if found else None

        run2 = lambda: (campaign_dir() / "runs" / "r02-A") if campaign_dir() else None
        # the second run: wait until both hosts' records arrive, then one host dies
        dead = hosts.names[1]

        def both_hosts_sending() -> bool:
            path = run2()
            if path is None or not (path / "records.csv").is_file():
                return False
            records = pd.read_csv(path / "records.csv")
            return len(records) > 0 and all(_worker_pids_by_host(hosts, records).values())

        wait_until(both_hosts_sending, 180, "records from both hosts in run 2",
                   retry_on=(pd.errors.EmptyDataError, OSError))
        time.sleep(2.0)
        dead_pids = {str(p) for p in hosts.pids(dead)}
        killed_at = time.time()
        _ip("-n", dead, "link", "set", f"{hosts.veths[1]}i", "down")
        hosts.kill(dead)
        assert campaign.wait(timeout=240) == 0, (tmp_path / "campaign.out").read_text()[-4000:]
    finally:
        if campaign is not None and campaign.poll() is None:
            campaign.kill()
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()
        stubs.close()
        hosts.close()
    printed = (tmp_path / "campaign.out").read_text()
    runs = campaign_dir() / "runs"

    # run 1: a local run's shape, every request recorded, both hosts' records
    run1 = runs / "r01-A"
    local_files = {p.name for p in GOLDEN_RUN.iterdir()} - {"metrics.csv"}   # no metric targets
    assert {p.name for p in run1.iterdir()} >= local_files
    m1 = json.loads((run1 / "manifest.json").read_text())
    records1 = pd.read_csv(run1 / "records.csv")
    assert m1["status"] == "complete"
    assert len(records1) == m1["records_written"] == m1["locust_requests"] > 50
    assert list(records1.columns) == list(RECORD_FIELDS)
    assert len(m1["workers"]) == 2 and not any(w["lost"] for w in m1["workers"])
    assert set(records1["worker"]) == {w["worker"] for w in m1["workers"]}
    assert all(abs(w["clock_offset_s"]) <= w["clock_error_s"] + 0.005 for w in m1["workers"])
    assert "clock" in printed and printed.count("worker ") >= 4

    # run 2: one host died mid-run: the run finished, what arrived is kept, the loss is named
    m2 = json.loads((runs / "r02-A" / "manifest.json").read_text())
    records2 = pd.read_csv(runs / "r02-A" / "records.csv")
    assert m2["status"] == "complete" and len(records2) == m2["records_written"]
    lost = [w for w in m2["workers"] if w["lost"]]
    assert len(lost) == 1 and lost[0]["worker"].rsplit(":", 1)[-1] in dead_pids
    assert lost[0]["last_batch_unix"] <= killed_at + 0.5
    from_dead = records2[records2["worker"] == lost[0]["worker"]]
    assert len(from_dead) == lost[0]["records"] > 0
    survivor = records2[records2["worker"] != lost[0]["worker"]]
    ends = survivor["start_unix"] + survivor["e2e_s"]
    assert ends.max() > killed_at + 3, "the other host went on after the loss"
    assert "LOST" in printed
    summary = json.loads((campaign_dir() / "report" / "summary.json").read_text())
    assert any(w.get("code") == "worker_lost" or "worker_lost" in json.dumps(w)
               for w in summary.get("warnings", [])), summary.get("warnings")
