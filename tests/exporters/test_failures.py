"""Failure rules: lost GPUs, NVML init failure and recovery, NVML dying, hanging calls."""

from __future__ import annotations

import threading
import time

import pynvml
import pytest

from exporters.fake import FakeNvml
from exporters.server import ExporterHTTPServer

from exporter_testlib import FakeClock, check_golden, http_get, make_exporter, series

GPU0 = '{UUID="GPU-fa4e0000-0000-4000-8000-000000000000",gpu="0"}'
GPU1 = '{UUID="GPU-fa4e0001-0000-4000-8000-000000000001",gpu="1"}'


def test_real_pynvml_error_classes_are_raised() -> None:
    err = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    assert type(err) is pynvml.NVMLError_NotSupported


def test_gpu_lost_mid_run_others_keep_reporting() -> None:
    fake = FakeNvml(3)
    exp = make_exporter(fake)
    exp.sampler.tick(5)
    fake.gpus[1].lost = True
    exp.sampler.tick(5)
    text = exp.metrics().decode()
    check_golden("gpu_lost.prom", text)
    assert series(text, "nvml_up") == {"": 1.0}
    up = series(text, "nvml_gpu_up")
    assert up[GPU0] == 1.0 and up[GPU1] == 0.0
    assert GPU1 not in series(text, "nvml_gpu_memory_used_bytes")  # no stale values
    assert GPU0 in series(text, "nvml_gpu_memory_used_bytes")
    assert any('gpu="1"' in k for k in series(text, "nvml_gpu_info"))  # identity stays
    assert series(text, "exporter_nvml_errors_total")[
        '{error="GpuIsLost",function="nvmlDeviceGetMemoryInfo"}'] == 1
    # it comes back
    fake.gpus[1].lost = False
    exp.sampler.tick(5)
    text = exp.metrics().decode()
    assert series(text, "nvml_gpu_up")[GPU1] == 1.0
    assert GPU1 in series(text, "nvml_gpu_power_watts")


def test_unknown_error_marks_gpu_down() -> None:
    fake = FakeNvml(2)
    fake.gpus[0].errors["nvmlDeviceGetPowerUsage"] = pynvml.NVML_ERROR_UNKNOWN
    exp = make_exporter(fake)
    exp.sampler.tick(5)
    up = series(exp.metrics().decode(), "nvml_gpu_up")
    assert up == {GPU0: 0.0, GPU1: 1.0}


def test_init_failure_then_recovery() -> None:
    fake = FakeNvml(2, init_failures=2, init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    exp = make_exporter(fake)
    for _ in range(2):
        exp.sampler.tick(5)
        text = exp.metrics().decode()
        assert series(text, "nvml_up") == {"": 0.0}
        assert "nvml_gpu_up" not in text
    assert series(text, "exporter_nvml_errors_total") == {
        '{error="DriverNotLoaded",function="nvmlInit"}': 2.0}
    exp.sampler.tick(5)
    text = exp.metrics().decode()
    assert series(text, "nvml_up") == {"": 1.0}
    assert series(text, "nvml_gpu_up") == {GPU0: 1.0, GPU1: 1.0}
    assert fake.calls["nvmlInit"] == 3


def test_nvml_dies_mid_run_reinitialises() -> None:
    fake = FakeNvml(2)
    exp = make_exporter(fake)
    exp.sampler.tick(5)
    fake.initialised = False           # e.g. the driver was reloaded
    fake.init_failures = 1
    exp.sampler.tick(5)                # every call raises Uninitialized
    text = exp.metrics().decode()
    assert series(text, "nvml_up") == {"": 0.0}
    assert series(text, "nvml_gpu_up") == {GPU0: 0.0, GPU1: 0.0}  # known GPUs reported down
    exp.sampler.tick(5)                # init fails once more
    assert series(exp.metrics().decode(), "nvml_up") == {"": 0.0}
    exp.sampler.tick(5)                # and succeeds
    text = exp.metrics().decode()
    assert series(text, "nvml_up") == {"": 1.0}
    assert series(text, "nvml_gpu_up") == {GPU0: 1.0, GPU1: 1.0}
    assert series(text, "exporter_nvml_errors_total")[
        '{error="Uninitialized",function="nvmlDeviceGetMemoryInfo"}'] == 2


def test_gpu_gone_after_reinit_is_reported_down_not_dropped() -> None:
    fake = FakeNvml(2)
    exp = make_exporter(fake)
    exp.sampler.tick(5)
    fake.initialised = False
    exp.sampler.tick(5)           # NVML down
    del fake.gpus[1]              # GPU 1 fell off the bus
    exp.sampler.tick(5)           # re-initialised with one GPU
    text = exp.metrics().decode()
    assert series(text, "nvml_up") == {"": 1.0}
    assert series(text, "nvml_gpu_up") == {GPU0: 1.0, GPU1: 0.0}
    assert GPU1 not in series(text, "nvml_gpu_power_watts")


def test_selection_by_uuid_and_index_survives_reinit() -> None:
    fake = FakeNvml(3)
    exp = make_exporter(fake, gpus=["GPU-fa4e0002-0000-4000-8000-000000000002", "0"])
    exp.sampler.tick(5)
    assert set(series(exp.metrics().decode(), "nvml_gpu_up")) == {
        GPU0, '{UUID="GPU-fa4e0002-0000-4000-8000-000000000002",gpu="2"}'}
    # NVML comes back with another order: the choice follows the UUIDs, not the indices
    fake.initialised = False
    exp.sampler.tick(5)
    fake.gpus.reverse()
    exp.sampler.tick(5)
    assert series(exp.metrics().decode(), "nvml_gpu_up") == {
        '{UUID="GPU-fa4e0000-0000-4000-8000-000000000000",gpu="2"}': 1.0,
        '{UUID="GPU-fa4e0002-0000-4000-8000-000000000002",gpu="0"}': 1.0}


def test_hanging_call_does_not_block_scrapes_and_marks_only_that_gpu_down() -> None:
    fake = FakeNvml(2)
    release = threading.Event()
    exp = make_exporter(fake, clock=time.monotonic, interval=0.05, stale_after=0.4)
    exp.start()
    server = ExporterHTTPServer("127.0.0.1", 0, exp)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        deadline = time.monotonic() + 5
        while series(http_get(url)[1].decode(), "nvml_gpu_up") != {GPU0: 1.0, GPU1: 1.0}:
            assert time.monotonic() < deadline, "GPUs never came up"
            time.sleep(0.05)
        fake.gpus[1].hang["nvmlDeviceGetPowerUsage"] = release
        hung = '{error="Hung",function="nvmlDeviceGetPowerUsage"}'
        # GPU 1 is marked down, and the hang counted, once its read has run past stale_after
        deadline = time.monotonic() + 5
        while True:
            text = http_get(url)[1].decode()
            if (series(text, "nvml_gpu_up") == {GPU0: 1.0, GPU1: 0.0}
                    and hung in series(text, "exporter_nvml_errors_total")):
                break
            assert time.monotonic() < deadline, "the hung GPU was never marked down"
            time.sleep(0.05)
        t0 = time.monotonic()
        status, body = http_get(url, timeout=2)
        elapsed = time.monotonic() - t0
        text = body.decode()
        assert status == 200 and elapsed < 1.5   # a scrape blocked by the hang would time out
        assert series(text, "nvml_gpu_up") == {GPU0: 1.0, GPU1: 0.0}
        assert GPU1 not in series(text, "nvml_gpu_memory_used_bytes")
        assert series(text, "exporter_nvml_errors_total")[hung] == 1
        health = http_get(url.replace("/metrics", "/healthz"))[1].decode()
        assert '"up": false' in health and '"stale": false' in health
        # released: the GPU comes back
        del fake.gpus[1].hang["nvmlDeviceGetPowerUsage"]
        release.set()
        deadline = time.monotonic() + 5
        while series(http_get(url)[1].decode(), "nvml_gpu_up").get(GPU1) != 1.0:
            assert time.monotonic() < deadline, "GPU 1 did not come back"
            time.sleep(0.05)
        # the hang was counted once, however many sampling rounds it lasted
        assert series(http_get(url)[1].decode(), "exporter_nvml_errors_total")[hung] == 1
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        exp.stop()


def test_hanging_init_does_not_block_scrapes() -> None:
    fake = FakeNvml(1)
    fake.init_hang = threading.Event()
    exp = make_exporter(fake, clock=time.monotonic, interval=0.05, stale_after=0.3)
    exp.start()
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        text = exp.metrics().decode()
        assert time.monotonic() - t0 < 0.5
        assert series(text, "nvml_up") == {"": 0.0}
        assert exp.health()["stale"] is True
    finally:
        fake.init_hang.set()
        exp.stop()


def test_stale_snapshot_reports_gpus_down() -> None:
    clock = FakeClock()
    exp = make_exporter(FakeNvml(1), clock=clock, stale_after=3.0)
    exp.sampler.tick(5)
    assert series(exp.metrics().decode(), "nvml_gpu_up") == {GPU0: 1.0}
    clock.advance(3.5)  # the sampling loop has not finished a round since
    text = exp.metrics().decode()
    assert series(text, "nvml_gpu_up") == {GPU0: 0.0}
    assert "nvml_gpu_power_watts" not in text


def test_non_nvml_exception_in_backend_never_escapes() -> None:
    class Broken(FakeNvml):
        def nvmlDeviceGetTemperature(self, handle):  # type: ignore[override]
            raise RuntimeError("boom")

    exp = make_exporter(Broken(1))
    exp.sampler.tick(5)
    text = exp.metrics().decode()
    assert series(text, "nvml_gpu_up") == {GPU0: 1.0}
    assert "nvml_gpu_temperature_celsius" not in text
    assert series(text, "exporter_nvml_errors_total") == {
        '{error="RuntimeError",function="nvmlDeviceGetTemperature"}': 1.0}


@pytest.mark.parametrize("code,expected", [
    (pynvml.NVML_ERROR_NOT_SUPPORTED, "unsupported"),
    (pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, "unsupported"),
    (pynvml.NVML_ERROR_GPU_IS_LOST, "gpu_lost"),
    (pynvml.NVML_ERROR_UNKNOWN, "gpu_lost"),
    (pynvml.NVML_ERROR_UNINITIALIZED, "nvml_down"),
    (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "nvml_down"),
    (pynvml.NVML_ERROR_TIMEOUT, "transient"),
])
def test_classify(code: int, expected: str) -> None:
    from exporters.errors import classify, error_name
    err = pynvml.NVMLError(code)
    assert classify(err).value == expected
    assert error_name(err) == type(err).__name__.removeprefix("NVMLError_")
