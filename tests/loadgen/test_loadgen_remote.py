"""Remote workers: the master's roster (clocks, configs, losses) and the campaign's refusals.

The network-namespace test (test_loadgen_netns.py) runs the whole thing across network stacks;
these run on loopback and in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.config import load_config
from core.rundir.manifest import CLOCK_WARN_S
from locustfiles.messages import ClockProbe, ClockReply, RecordBatch
from locustfiles.workers import CLOCK_PROBES, WorkerRoster, reply_to_probe
from support import ROOT, free_port, run_campaign, write_config


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _roster(clock: Clock, max_offset: float = 1.0):
    sent, refusals = [], []
    roster = WorkerRoster(lambda *a, **kw: sent.append((a, kw)), "digest-1", max_offset,
                          refusals.append, clock=clock)
    return roster, sent, refusals


def _reply(roster, clock, *, sent_at, rtt, worker_ahead_s, digest="digest-1", worker="h:1"):
    """A reply whose round trip took ``rtt`` and whose worker clock is ``worker_ahead_s`` off."""
    clock.now = sent_at + rtt
    roster.on_clock_reply(ClockReply(sent_at, sent_at + rtt / 2 + worker_ahead_s, worker, "h",
                                     digest))


def test_the_offset_is_taken_from_the_shortest_round_trip():
    clock = Clock()
    roster, _, refusals = _roster(clock)
    # slower probes (a reply that waited on one leg) read wrong; the fastest one is kept
    _reply(roster, clock, sent_at=1000.0, rtt=0.006, worker_ahead_s=0.010)
    _reply(roster, clock, sent_at=1000.1, rtt=0.090, worker_ahead_s=-0.040)
    _reply(roster, clock, sent_at=1000.2, rtt=0.002, worker_ahead_s=0.003)
    seen = roster.workers["h:1"]
    assert seen.clock_offset_s == pytest.approx(0.003, abs=1e-6)
    assert seen.clock_error_s == pytest.approx(0.001, abs=1e-6)
    assert not refusals


def test_a_clock_too_far_off_or_another_config_refuses_the_run(caplog):
    clock = Clock()
    roster, _, refusals = _roster(clock, max_offset=0.5)
    _reply(roster, clock, sent_at=1000.0, rtt=0.001, worker_ahead_s=0.05, worker="near:1")
    assert not refusals and "clock +50.0 ms off" in caplog.text    # above 10 ms: a warning
    assert 0.05 > CLOCK_WARN_S
    _reply(roster, clock, sent_at=1001.0, rtt=0.001, worker_ahead_s=-2.0, worker="far:1")
    assert len(refusals) == 1 and "far:1" in refusals[0] and "-2000.0 ms" in refusals[0]
    _reply(roster, clock, sent_at=1002.0, rtt=0.001, worker_ahead_s=0.0, worker="other:1",
           digest="digest-2")
    assert len(refusals) == 2 and "different config" in refusals[1]


def test_a_worker_without_its_final_batch_is_named_lost_with_its_last_batch():
    clock = Clock(2000.0)
    roster, _, _ = _roster(clock)
    roster.on_batch(RecordBatch("a:1", rows=[[0]] * 5))
    roster.on_batch(RecordBatch("b:2", rows=[[0]] * 3))
    clock.now = 2010.0
    roster.on_batch(RecordBatch("a:1", rows=[[0]] * 2, final=True))
    by_worker = {w.worker: w for w in roster.summary()}
    assert by_worker["a:1"].records == 7 and not by_worker["a:1"].lost
    assert by_worker["b:2"].lost and by_worker["b:2"].last_batch_unix == 2000.0
    assert by_worker["b:2"].records == 3


def test_the_worker_answers_a_probe_with_its_clock_and_config():
    sent = []
    reply_to_probe(lambda *a: sent.append(a), ClockProbe(123.0), "h:9", "h", "abc")
    ((name, payload),) = sent
    reply = ClockReply.from_payload(payload)
    assert reply.probe_sent_unix == 123.0 and reply.config_digest == "abc" and reply.worker_unix > 0


def test_the_roster_probes_a_new_worker_several_times():
    import gevent

    clock = Clock()
    roster, sent, _ = _roster(clock)
    roster.on_connect("client-1").join(timeout=5)
    gevent.sleep(0)
    assert len(sent) == CLOCK_PROBES and all(kw == {"client_id": "client-1"} for _, kw in sent)


def test_the_config_digest_follows_the_content_not_the_path(tmp_path):
    a = write_config(tmp_path / "a.json", [{"label": "A", "base_url": "http://127.0.0.1:1/v1",
                                            "model": "m"}])
    b = tmp_path / "elsewhere" / "b.json"
    b.parent.mkdir()
    b.write_text(a.read_text())
    c = write_config(tmp_path / "c.json", [{"label": "A", "base_url": "http://127.0.0.1:1/v1",
                                            "model": "m"}], request={"max_tokens": 17})
    assert load_config(a).digest() == load_config(b).digest() != load_config(c).digest()


@pytest.mark.slow
def test_a_worker_with_another_config_is_refused_and_the_campaign_stops(stub, tmp_path):
    url = stub(ttft_ms=5, itl_ms=1)
    endpoints = [{"label": "A", "base_url": url, "model": "stub-model"}]
    cfg = write_config(tmp_path / "ep.json", endpoints, load={"repetitions": 2})
    other = write_config(tmp_path / "other.json", endpoints, load={"repetitions": 2},
                         request={"max_tokens": 8})
    port = free_port()
    worker = subprocess.Popen([sys.executable, "-m", "locustfiles.remote_worker",
                               "--master-host", "127.0.0.1", "--master-port", str(port),
                               "--endpoints-file", str(other), "--runs", "1"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc = run_campaign(["--endpoints-file", str(cfg), "--results-dir",
                             str(tmp_path / "res"), "--no-preflight", "--no-report",
                             "--expect-workers", "1", "--master-bind-host", "127.0.0.1",
                             "--master-bind-port", str(port), "--llm-metrics-port", "0",
                             "--expect-workers-max-wait", "60"], timeout=180)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "loads a different config" in proc.stderr and "starting no more runs" in proc.stderr
    (campaign_dir,) = (tmp_path / "res").iterdir()
    summary = json.loads((campaign_dir / "campaign.json").read_text())
    assert [e["status"] for e in summary["order"]] == ["failed"]   # run 2 never started
    manifest = json.loads((campaign_dir / "runs" / "r01-A" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "different config" in manifest["failure_reason"]


@pytest.mark.slow
def test_workers_that_never_come_fail_the_run_with_the_figures(stub, tmp_path):
    cfg = write_config(tmp_path / "ep.json", [{"label": "A", "base_url": stub(),
                                               "model": "stub-model"}])
    proc = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                         "--no-preflight", "--no-report", "--expect-workers", "2",
                         "--master-bind-host", "127.0.0.1", "--master-bind-port",
                         str(free_port()), "--llm-metrics-port", "0",
                         "--expect-workers-max-wait", "4"], timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (campaign_dir,) = (tmp_path / "res").iterdir()
    manifest = json.loads((campaign_dir / "runs" / "r01-A" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert "2 worker(s) expected, 0 connected within 4 s" in manifest["failure_reason"]

