"""A real Prometheus scrapes a running exporter; promtool lints the exposition and the config."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from exporters.fake import FakeGpu, FakeNvml, GiB
from exporters.process import ProcessSelector, ProcessTreeCollector

from exporter_testlib import REPO, exporter_process, http_get, make_exporter, running
from support import free_port, wait_until


def _tool(name: str) -> str:
    """Path of a Prometheus binary; skip without it, except in CI (CI=true) where it must exist."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"`{name}` is missing: install the Debian package `prometheus` "
                    "(deploy/install_system_deps.sh)")
    pytest.skip(f"`{name}` not installed (apt-get install prometheus)")


def _rich_exposition(with_processes: bool) -> bytes:
    """An exposition with every metric family the exporter can emit."""
    gpus = [FakeGpu(index=0, processes=[(4242, 10 * GiB)]),
            FakeGpu(index=1).unsupported("nvmlDeviceGetTotalEnergyConsumption")]
    exp = make_exporter(FakeNvml(gpus), pcie=True, process_memory=True)
    if with_processes:
        exp.registry.register(ProcessTreeCollector([ProcessSelector.for_pid(os.getppid())]))
    exp.sampler.tick(5)
    exp.sampler.tick(5)
    return exp.metrics()


def _promtool_metrics(body: bytes) -> tuple[int, list[str]]:
    out = subprocess.run([_tool("promtool"), "check", "metrics"], input=body,
                         capture_output=True, timeout=30)
    findings = (out.stdout + out.stderr).decode().strip().splitlines()
    return out.returncode, findings


def test_promtool_check_metrics_passes_on_the_gpu_metrics() -> None:
    body = _rich_exposition(with_processes=False)
    assert b"nvml_gpu_process_memory_used_bytes" in body and b"exporter_nvml_errors_total" in body
    rc, findings = _promtool_metrics(body)
    assert rc == 0 and findings == [], findings


def test_promtool_check_metrics_with_process_metrics() -> None:
    body = _rich_exposition(with_processes=True)
    assert b"server_process_cpu_seconds_total" in body and b"server_processes" in body
    rc, findings = _promtool_metrics(body)
    assert rc == 0 and findings == [], findings


def test_promtool_check_config_of_the_shipped_scrape_config() -> None:
    promtool = _tool("promtool")
    cfg = REPO / "deploy/prometheus/prometheus.yml"
    out = subprocess.run([promtool, "check", "config", str(cfg)], capture_output=True,
                         timeout=30, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    text = cfg.read_text()
    for target in ("127.0.0.1:9411", "127.0.0.1:9412", "127.0.0.1:8101", "127.0.0.1:8102"):
        assert target in text


def _query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = http_get(url, timeout=2)
    data = json.loads(body)
    assert status == 200 and data["status"] == "success", body
    return data["data"]["result"]


def test_real_prometheus_scrapes_the_exporter(tmp_path: Path) -> None:
    prometheus = _tool("prometheus")
    with exporter_process(tmp_path, "--fake-gpus", "2", "--interval", "0.5") as (_, port):
        prom_port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: llm-gpu-exporter\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{port}']\n        labels: {{endpoint: test}}\n")
        cmd = [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
               f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"]
        with running(cmd, tmp_path / "prometheus.log") as prom:
            try:
                result = wait_until(lambda: len(_query(prom_port, "nvml_gpu_memory_used_bytes"))
                                    == 2 and _query(prom_port, "nvml_gpu_memory_used_bytes"), 30,
                                    "both GPUs' series in Prometheus", interval=0.5,
                                    retry_on=(Exception,))
            except TimeoutError:
                pytest.fail("Prometheus never returned the series; its log:\n"
                            + (tmp_path / "prometheus.log").read_text()
                            + f"\nprometheus rc={prom.poll()}")
            by_gpu = {r["metric"]["gpu"]: r for r in result}
            assert set(by_gpu) == {"0", "1"}
            for r in by_gpu.values():
                labels = r["metric"]
                assert labels["job"] == "llm-gpu-exporter" and labels["endpoint"] == "test"
                assert labels["UUID"].startswith("GPU-") and labels["instance"].endswith(f":{port}")
                assert float(r["value"][1]) == 20 * GiB
            assert [float(r["value"][1]) for r in _query(prom_port, "nvml_up")] == [1.0]
            up = _query(prom_port, 'up{job="llm-gpu-exporter"}')
            assert [float(r["value"][1]) for r in up] == [1.0]
            util = _query(prom_port, "nvml_gpu_utilization_ratio")
            assert len(util) == 2 and all(0.0 <= float(r["value"][1]) <= 1.0 for r in util)


def test_compose_snippet_is_valid_yaml_with_the_exporter_service() -> None:
    path = REPO / "deploy/compose/exporter.yml"
    try:
        import yaml  # noqa: F401
        python = sys.executable
    except ImportError:  # the venv has no PyYAML; Debian's python3-yaml will do
        python = shutil.which("python3") or ""
        probe = subprocess.run([python, "-c", "import yaml"], capture_output=True) if python else None
        if probe is None or probe.returncode != 0:
            if os.environ.get("CI") == "true":
                pytest.fail("no YAML parser: install the Debian package python3-yaml")
            pytest.skip("no YAML parser (apt-get install python3-yaml)")
    code = ("import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))")
    out = subprocess.run([python, "-c", code, str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    exporter = services["gpu-exporter-a"]
    command = " ".join(exporter["command"])
    assert "python -m exporters" in command and "--port 9411" in command
    assert exporter["network_mode"] == "host" and exporter["pid"] == "service:vllm-a"
    assert "vllm-a" in services


def test_systemd_unit_runs_the_console_script() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keep key case
    unit.read(REPO / "deploy/systemd/llm-gpu-exporter.service")
    assert "llm-gpu-exporter --listen 127.0.0.1" in unit["Service"]["ExecStart"]
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
