"""Exposition text of known fake-GPU states, compared with golden files."""

from __future__ import annotations

import pynvml

from exporters.fake import FakeGpu, FakeNvml, GiB

from exporter_testlib import check_golden, make_exporter, series


def test_two_healthy_gpus_all_fields() -> None:
    gpus = [FakeGpu(index=0), FakeGpu(index=1, memory_used=40 * GiB, utilization=90,
                                      processes=[(4242, 38 * GiB), (4343, None)])]
    exp = make_exporter(FakeNvml(gpus), pcie=True, process_memory=True)
    exp.sampler.tick(5)
    exp.sampler.tick(5)  # GPM needs two samples
    text = exp.metrics().decode()
    check_golden("two_gpus.prom", text)
    assert series(text, "nvml_gpu_utilization_ratio") == {
        '{UUID="GPU-fa4e0000-0000-4000-8000-000000000000",gpu="0"}': 0.4,
        '{UUID="GPU-fa4e0001-0000-4000-8000-000000000001",gpu="1"}': 0.9}
    # a process whose memory NVML cannot tell is left out, not exported as 0
    assert list(series(text, "nvml_gpu_process_memory_used_bytes").values()) == [38 * GiB]
    assert series(text, "exporter_scrape_duration_seconds") == {"": 0.0025}


def test_unsupported_fields_are_left_out_and_logged_once(caplog) -> None:
    a100 = FakeGpu(index=0, name="NVIDIA A100-SXM4-80GB", gpm=False, compute_capability=(8, 0))
    old = FakeGpu(index=1, name="Tesla T4").unsupported(
        "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetSamples",
        "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetPcieThroughput")
    old.errors["nvmlDeviceGetTemperature"] = pynvml.NVML_ERROR_TIMEOUT  # transient
    del old.gpm_percent[pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL]
    fake = FakeNvml([a100, old])
    exp = make_exporter(fake, pcie=True)
    caplog.set_level("INFO", logger="exporters")
    for _ in range(3):
        exp.sampler.tick(5)
    text = exp.metrics().decode()
    check_golden("unsupported.prom", text)
    for bad in ("-1", "NaN", "nan", "Inf"):
        assert not any(line.endswith(" " + bad) for line in text.splitlines())
    gpu1 = '{UUID="GPU-fa4e0001-0000-4000-8000-000000000001",gpu="1"}'
    assert gpu1 not in series(text, "nvml_gpu_energy_joules_total")
    assert gpu1 not in series(text, "nvml_gpu_memory_reserved_bytes")
    assert gpu1 not in series(text, "nvml_gpu_temperature_celsius")
    assert gpu1 not in series(text, "nvml_gpu_tensor_active_ratio")
    assert series(text, "nvml_gpu_sm_active_ratio") == {gpu1: 0.35}  # the A100 has no GPM
    # utilization falls back to nvmlDeviceGetUtilizationRates when samples are unsupported
    assert series(text, "nvml_gpu_utilization_ratio")[gpu1] == 0.4
    # unsupported calls are not repeated: one error each, while the transient one repeats
    errors = series(text, "exporter_nvml_errors_total")
    assert errors['{error="NotSupported",function="nvmlDeviceGetTotalEnergyConsumption"}'] == 1
    assert errors['{error="Timeout",function="nvmlDeviceGetTemperature"}'] == 3
    # logged once per (gpu, field), however many rounds
    energy_logs = [r for r in caplog.records if "nvmlDeviceGetTotalEnergyConsumption" in r.message]
    assert len(energy_logs) == 1 and "GPU 1" in energy_logs[0].message
    assert sum("no GPM counters" in r.message for r in caplog.records) == 1
    assert sum("nvmlDeviceGetTemperature" in r.message for r in caplog.records) == 1


def test_nvml_absent_serves_nvml_up_0() -> None:
    fake = FakeNvml(2, init_failures=-1)
    exp = make_exporter(fake)
    exp.sampler.tick(5)
    exp.sampler.tick(5)
    check_golden("nvml_down.prom", exp.metrics().decode())
