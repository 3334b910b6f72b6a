"""The command line: refused ports, busy ports, bad GPU selectors, endpoints, clean shutdown."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import pytest

from exporters.__main__ import main

from exporter_testlib import PYTHON, REPO, exporter_process, http_get, real_nvml_present, series
from support import free_port



@pytest.mark.parametrize("port,why", [(8000, "vLLM"), (9400, "dcgm-exporter")])
def test_reserved_ports_are_refused(port: int, why: str, capsys) -> None:
    assert main(["--port", str(port), "--fake-gpus", "1"]) == 2
    err = capsys.readouterr().err
    assert f"port {port}" in err and why in err and "9411" in err


def test_port_in_use_exits_2_with_clear_message(capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["--port", str(port), "--fake-gpus", "1", "--log-level", "error"]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port} is already in use" in err and "--port" in err


def test_bad_gpu_selector_names_available_gpus(capsys) -> None:
    assert main(["--fake-gpus", "2", "--gpus", "0,5", "--port", str(free_port()),
                 "--log-level", "error"]) == 2
    err = capsys.readouterr().err
    assert "--gpus 5: no such GPU" in err
    assert "0 GPU-fa4e0000" in err and "1 GPU-fa4e0001" in err


@pytest.mark.parametrize("args,msg", [
    (["--gpus", "zero"], "neither an NVML index"),
    (["--interval", "0.01"], "at least 0.1"),
    (["--process-match", "("], "not a valid regular expression"),
])
def test_bad_arguments(args: list[str], msg: str, capsys) -> None:
    assert main(["--fake-gpus", "1", *args]) == 2
    assert msg in capsys.readouterr().err


def test_serves_metrics_and_healthz_and_stops_on_sigterm(tmp_path) -> None:
    with exporter_process(tmp_path, "--fake-gpus", "2", "--interval", "0.2",
                          "--process-memory") as (proc, port):
        # /healthz answers before the first sampling round is done: wait for its first sample
        deadline = time.monotonic() + 10
        while True:
            status, body = http_get(f"http://127.0.0.1:{port}/healthz")
            health = json.loads(body)
            if health["last_sample_age_seconds"] is not None:
                break
            assert time.monotonic() < deadline, f"no sample within 10 s: {health}"
            time.sleep(0.05)
        assert status == 200 and health["nvml_up"] is True
        assert [g["gpu"] for g in health["gpus"]] == ["0", "1"]
        assert 0 <= health["last_sample_age_seconds"] < 2
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        text = body.decode()
        assert status == 200
        assert len(series(text, "nvml_gpu_memory_used_bytes")) == 2
        assert http_get(f"http://127.0.0.1:{port}/nope")[0] == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0


def test_without_nvml_warns_about_selector_and_serves_nvml_up_0(tmp_path) -> None:
    if real_nvml_present():
        pytest.skip("a real NVIDIA driver is present")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with exporter_process(tmp_path, "--gpus", "0", "--process-pid", str(sleeper.pid),
                              "--interval", "0.2") as (proc, port):
            time.sleep(0.5)  # a few init retries
            text = http_get(f"http://127.0.0.1:{port}/metrics")[1].decode()
            assert series(text, "nvml_up") == {"": 0.0}
            assert "nvml_gpu_up" not in text
            assert series(text, "server_processes") == {f'{{selector="pid:{sleeper.pid}"}}': 1}
            assert series(text, "server_process_resident_memory_bytes")[
                f'{{selector="pid:{sleeper.pid}"}}'] > 0
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(5) == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    log = next(tmp_path.glob("exporter-*.log")).read_text()
    assert "NVML is not available" in log
    assert log.count("NVML is not available (") == 1  # logged once, not every retry
    assert "--gpus 0 cannot be checked" in log


def test_help_runs_as_module() -> None:
    out = subprocess.run([PYTHON, "-m", "exporters", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=20)
    assert out.returncode == 0 and "--process-match" in out.stdout and "9411" in out.stdout


def _missing_pid() -> int:
    import psutil

    pid = 999999
    while psutil.pid_exists(pid):
        pid += 1
    return pid


def test_process_pid_that_does_not_exist_exits_2_naming_it() -> None:
    # (a subprocess, bounded: an exporter that accepts the pid would serve until stopped)
    for pid, msg in ((_missing_pid(), "no such process"), (0, "is not a process id")):
        out = subprocess.run([PYTHON, "-m", "exporters", "--fake-gpus", "1", "--process-pid",
                              str(pid), "--listen", "127.0.0.1", "--port", str(free_port())],
                             cwd=REPO, capture_output=True, text=True, timeout=20)
        assert out.returncode == 2, out.stderr
        err = out.stderr.strip().splitlines()
        assert len(err) == 1 and f"--process-pid {pid}" in err[0] and msg in err[0], err
