"""The real pynvml adapter, with pynvml's functions patched (no GPU here): conversions and fallbacks."""

from __future__ import annotations

import types
from unittest import mock

import pynvml
import pytest

from exporters.backend import MemoryInfo, PynvmlBackend

H = object()  # a device handle stand-in


def _raise(code: int):
    def f(*_args, **_kwargs):
        raise pynvml.NVMLError(code)
    return f


def test_memory_v2_then_fallback_to_v1_without_reserved() -> None:
    b = PynvmlBackend()
    v2 = types.SimpleNamespace(total=10, used=3, free=6, reserved=1)
    with mock.patch.object(pynvml, "nvmlDeviceGetMemoryInfo", return_value=v2) as call:
        assert b.nvmlDeviceGetMemoryInfo(H) == MemoryInfo(10, 3, 6, 1)
        assert call.call_args.kwargs["version"] == pynvml.nvmlMemory_v2

    def v1_only(handle, version=None):
        if version:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return types.SimpleNamespace(total=10, used=4, free=6)

    with mock.patch.object(pynvml, "nvmlDeviceGetMemoryInfo", side_effect=v1_only) as call:
        assert b.nvmlDeviceGetMemoryInfo(H) == MemoryInfo(10, 4, 6, None)
        assert b.nvmlDeviceGetMemoryInfo(H) == MemoryInfo(10, 4, 6, None)
        assert call.call_count == 3  # v2 tried once, then v1 only


def test_temperature_falls_back_to_the_legacy_call() -> None:
    b = PynvmlBackend()
    with mock.patch.object(pynvml, "nvmlDeviceGetTemperatureV",
                           side_effect=_raise(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)), \
         mock.patch.object(pynvml, "nvmlDeviceGetTemperature", return_value=51):
        assert b.nvmlDeviceGetTemperature(H) == 51


def test_samples_are_decoded_by_value_type() -> None:
    arr = (pynvml.c_nvmlSample_t * 2)()
    arr[0].timeStamp, arr[0].sampleValue.uiVal = 5, 30
    arr[1].timeStamp, arr[1].sampleValue.uiVal = 9, 50
    with mock.patch.object(pynvml, "nvmlDeviceGetSamples",
                           return_value=(pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, arr[0:2])):
        assert PynvmlBackend().nvmlDeviceGetSamples(H, 1, 0) == [(5, 30.0), (9, 50.0)]


def test_gpm_metrics_request_and_per_metric_errors() -> None:
    seen = {}

    def metrics_get(req):
        seen["ids"] = [req.metrics[i].metricId for i in range(req.numMetrics)]
        seen["version"] = req.version
        for i in range(req.numMetrics):
            req.metrics[i].value = 42.0 + i
            req.metrics[i].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED if i == 0 else 0
        return req

    with mock.patch.object(pynvml, "nvmlGpmMetricsGet", side_effect=metrics_get):
        out = PynvmlBackend().nvmlGpmMetricsGet(pynvml.c_nvmlGpmSample_t(),
                                                pynvml.c_nvmlGpmSample_t(), [2, 3])
    assert seen == {"ids": [2, 3], "version": pynvml.NVML_GPM_METRICS_GET_VERSION}
    assert isinstance(out[2], pynvml.NVMLError_NotSupported) and out[3] == 43.0


def test_small_conversions() -> None:
    b = PynvmlBackend()
    procs = [types.SimpleNamespace(pid=1, usedGpuMemory=None),
             types.SimpleNamespace(pid=2, usedGpuMemory=7)]
    with mock.patch.object(pynvml, "nvmlDeviceGetComputeRunningProcesses", return_value=procs):
        assert b.nvmlDeviceGetComputeRunningProcesses(H) == [(1, None), (2, 7)]
    with mock.patch.object(pynvml, "nvmlDeviceGetPciInfo",
                           return_value=types.SimpleNamespace(busId=b"00000000:1A:00.0")):
        assert b.nvmlDeviceGetPciInfo(H) == "00000000:1A:00.0"
    with mock.patch.object(pynvml, "nvmlGpmQueryDeviceSupport",
                           return_value=types.SimpleNamespace(isSupportedDevice=0)):
        assert b.nvmlGpmQueryDeviceSupport(H) is False
    with mock.patch.object(pynvml, "nvmlDeviceGetUtilizationRates",
                           return_value=types.SimpleNamespace(gpu=12, memory=3)):
        assert b.nvmlDeviceGetUtilizationRates(H) == (12.0, 3.0)
    with mock.patch.object(pynvml, "nvmlDeviceGetName", return_value=b"NVIDIA H100"):
        assert b.nvmlDeviceGetName(H) == "NVIDIA H100"


def test_init_without_driver_raises_the_real_error() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("a real NVIDIA driver is present")
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        PynvmlBackend().nvmlInit()
