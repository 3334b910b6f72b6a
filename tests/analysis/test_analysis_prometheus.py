"""--prometheus: metric samples for a run's window from query_range (a fake Prometheus here)."""

from __future__ import annotations

import http.server
import json
import math
import threading
import urllib.parse

import pytest

from support import synth
from analysis import prometheus
from analysis.build import Options, analyse

T0 = synth.T0


class _FakeProm(http.server.BaseHTTPRequestHandler):
    calls: list[dict] = []

    def do_GET(self):  # noqa: N802
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        query, start, end = q["query"][0], float(q["start"][0]), float(q["end"][0])
        step = float(q["step"][0])
        type(self).calls.append({"query": query, "start": start, "end": end})
        ts = [start + i * step for i in range(int((end - start) / step) + 1)]
        # Samples in [T0+20, T0+24) are missing (a scrape gap in Prometheus).
        ts = [t for t in ts if not (T0 + 20 <= t < T0 + 24)]
        if query == "up":
            result = [{"metric": {"__name__": "up", "instance": inst, "job": "j"},
                       "values": [[t, "1"] for t in ts]}
                      for inst in ("127.0.0.1:9411", "127.0.0.1:8101", "10.9.9.9:9412")]
        else:
            result = [
                {"metric": {"__name__": "nvml_gpu_utilization_ratio", "gpu": "0",
                            "instance": "127.0.0.1:9411", "job": "gpu"},
                 "values": [[t, "0.5"] for t in ts]},
                {"metric": {"__name__": "vllm:num_requests_running", "model_name": "m",
                            "instance": "127.0.0.1:8101", "job": "vllm"},
                 "values": [[t, "3"] for t in ts]},
                {"metric": {"__name__": "nvml_gpu_utilization_ratio", "gpu": "0",
                            "instance": "10.9.9.9:9412", "job": "gpu"},
                 "values": [[t, "0.9"] for t in ts]},
                {"metric": {"__name__": "nvml_gpu_utilization_ratio", "gpu": "0",
                            "instance": "10.0.0.1:1", "job": "gpu"},
                 "values": [[t, "0.1"] for t in ts]},
            ]
        body = json.dumps({"status": "success",
                           "data": {"resultType": "matrix", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def fake_prom():
    _FakeProm.calls = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeProm)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_prometheus_replaces_metrics_csv(tmp_path, fake_prom, monkeypatch):
    monkeypatch.setattr(prometheus, "MAX_POINTS", 20)        # forces chunked queries
    spec = synth.SynthSpec(stages=(1, 4), ramp_s=1.0, warmup_s=2.0, steady_s=10.0, drain_s=1.0,
                           metrics=False)
    synth.synth_run(tmp_path / "run", spec)
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    for ep in m["config"]["endpoints"]:    # URLs as Prometheus would name their instances
        ep["metrics_url"] = "http://127.0.0.1:8101/metrics" if ep["label"] == "A" else ""
        ep["exporter_url"] = "http://127.0.0.1:9411/metrics" if ep["label"] == "A" else ""
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(m))
    res = analyse([tmp_path / "run"], Options(prometheus=fake_prom, n_boot=200,
                                              prom_map={"10.9.9.9:9412": "B"}))
    assert len(_FakeProm.calls) > 2                             # chunked
    assert _FakeProm.calls[0]["start"] <= T0 and "nvml_" in _FakeProm.calls[0]["query"]
    pr = res.per_run
    a0 = pr[(pr["endpoint"] == "A") & (pr["level"] == 1.0)].iloc[0]
    b0 = pr[(pr["endpoint"] == "B") & (pr["level"] == 1.0)].iloc[0]
    assert a0["gpu_util_mean"] == pytest.approx(50.0)
    assert a0["running_mean"] == pytest.approx(3.0)
    assert b0["gpu_util_mean"] == pytest.approx(90.0)          # mapped by --prom-endpoint-label
    assert math.isnan(b0["running_mean"])
    codes = [w.code for w in res.warnings]
    assert "unmapped_series" in codes                           # instance 10.0.0.1:1
    gaps = [w.message for w in res.warnings if w.code == "metrics_gap"]
    assert any("endpoint A" in g and "level 4" in g for g in gaps)   # [T0+20, T0+24) missing
    assert res.runs[0].metrics_source == "prometheus"


def test_prometheus_unreachable_is_a_clear_error(tmp_path):
    from analysis.errors import AnalysisError
    spec = synth.SynthSpec(stages=(1,), ramp_s=1.0, warmup_s=1.0, steady_s=5.0, drain_s=1.0,
                           metrics=False)
    synth.synth_run(tmp_path / "run", spec)
    with pytest.raises(AnalysisError, match="cannot query it"):
        analyse([tmp_path / "run"], Options(prometheus="http://127.0.0.1:9", n_boot=200))
