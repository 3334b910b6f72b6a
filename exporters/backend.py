"""The device layer: the NVML calls the exporter makes, behind one small interface.

``PynvmlBackend`` is the real one (the ``pynvml`` module from nvidia-ml-py); ``exporters.fake``
holds a fake for tests and demos. Method names are the NVML function names, so the
``function`` label of ``exporter_nvml_errors_total`` is the call that failed. Errors are the
real ``pynvml.NVMLError_*`` classes. Units are NVML's own (mW, mJ, MHz, percent, KB/s);
the reader converts them to base units.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import pynvml


class MemoryInfo(NamedTuple):
    """Device memory in bytes; ``reserved`` is None where only the v1 call exists."""

    total: int
    used: int
    free: int
    reserved: int | None


class NvmlBackend(Protocol):
    """What the exporter needs from NVML. Every method may raise ``pynvml.NVMLError``."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str: ...
    def nvmlDeviceGetName(self, handle: Any) -> str: ...
    def nvmlDeviceGetPciInfo(self, handle: Any) -> str: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> MemoryInfo: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> tuple[float, float]: ...
    def nvmlDeviceGetSamples(self, handle: Any, sample_type: int,
                             last_seen_us: int) -> list[tuple[int, float]]: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int: ...
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int: ...
    def nvmlDeviceGetTemperature(self, handle: Any) -> int: ...
    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int: ...
    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]: ...
    def nvmlGpmQueryDeviceSupport(self, handle: Any) -> bool: ...
    def nvmlGpmSampleAlloc(self) -> Any: ...
    def nvmlGpmSampleFree(self, sample: Any) -> None: ...
    def nvmlGpmSampleGet(self, handle: Any, sample: Any) -> None: ...
    def nvmlGpmMetricsGet(self, sample1: Any, sample2: Any,
                          metric_ids: list[int]) -> dict[int, float | Exception]: ...
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[tuple[int, int | None]]: ...
    def nvmlDeviceGetPcieThroughput(self, handle: Any, counter: int) -> int: ...


def _text(value: str | bytes) -> str:
    """NVML strings arrive as bytes in some pynvml versions."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


_SAMPLE_FIELD = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
}


class PynvmlBackend:
    """The real device layer over nvidia-ml-py's ``pynvml``."""

    def __init__(self) -> None:
        self._memory_v2 = hasattr(pynvml, "nvmlMemory_v2")
        self._temperature_v = hasattr(pynvml, "nvmlDeviceGetTemperatureV")

    def nvmlInit(self) -> None:
        """Load libnvidia-ml and initialise it."""
        pynvml.nvmlInit()

    def nvmlShutdown(self) -> None:
        """Release NVML."""
        pynvml.nvmlShutdown()

    def nvmlSystemGetDriverVersion(self) -> str:
        """The driver version string."""
        return _text(pynvml.nvmlSystemGetDriverVersion())

    def nvmlDeviceGetCount(self) -> int:
        """Number of GPUs NVML sees (it ignores CUDA_VISIBLE_DEVICES)."""
        return int(pynvml.nvmlDeviceGetCount())

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        """The handle of GPU ``index`` in NVML's order."""
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        """GPU-xxxxxxxx-... UUID."""
        return _text(pynvml.nvmlDeviceGetUUID(handle))

    def nvmlDeviceGetName(self, handle: Any) -> str:
        """Product name."""
        return _text(pynvml.nvmlDeviceGetName(handle))

    def nvmlDeviceGetPciInfo(self, handle: Any) -> str:
        """PCI bus id, e.g. 00000000:1A:00.0."""
        return _text(pynvml.nvmlDeviceGetPciInfo(handle).busId)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> MemoryInfo:
        """Memory in bytes; the v2 call (with reserved memory) where the driver has it."""
        if self._memory_v2:
            try:
                m = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
                return MemoryInfo(int(m.total), int(m.used), int(m.free), int(m.reserved))
            except (pynvml.NVMLError_FunctionNotFound, pynvml.NVMLError_NotSupported,
                    pynvml.NVMLError_ArgumentVersionMismatch):
                self._memory_v2 = False
        m = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return MemoryInfo(int(m.total), int(m.used), int(m.free), None)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> tuple[float, float]:
        """(GPU busy %, memory controller busy %) over the driver's last sample period."""
        u = pynvml.nvmlDeviceGetUtilizationRates(handle)
        return float(u.gpu), float(u.memory)

    def nvmlDeviceGetSamples(self, handle: Any, sample_type: int,
                             last_seen_us: int) -> list[tuple[int, float]]:
        """(timestamp in NVML's microsecond clock, value) samples newer than ``last_seen_us``."""
        value_type, samples = pynvml.nvmlDeviceGetSamples(handle, sample_type, last_seen_us)
        field = _SAMPLE_FIELD.get(value_type, "uiVal")
        return [(int(s.timeStamp), float(getattr(s.sampleValue, field))) for s in samples]

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        """Board power in mW."""
        return int(pynvml.nvmlDeviceGetPowerUsage(handle))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        """Enforced power limit in mW."""
        return int(pynvml.nvmlDeviceGetEnforcedPowerLimit(handle))

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        """Energy in mJ since the driver was loaded."""
        return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))

    def nvmlDeviceGetTemperature(self, handle: Any) -> int:
        """GPU die temperature in degrees Celsius (the versioned call where the driver has it)."""
        if self._temperature_v:
            try:
                return int(pynvml.nvmlDeviceGetTemperatureV(handle, pynvml.NVML_TEMPERATURE_GPU))
            except (pynvml.NVMLError_FunctionNotFound, pynvml.NVMLError_ArgumentVersionMismatch):
                self._temperature_v = False
        return int(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))

    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int:
        """Current clock in MHz."""
        return int(pynvml.nvmlDeviceGetClockInfo(handle, clock_type))

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        """(major, minor)."""
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        return int(major), int(minor)

    def nvmlGpmQueryDeviceSupport(self, handle: Any) -> bool:
        """Whether the GPU has GPM counters (Hopper and later)."""
        return bool(pynvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice)

    def nvmlGpmSampleAlloc(self) -> Any:
        """A GPM sample buffer."""
        return pynvml.nvmlGpmSampleAlloc()

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        """Free a GPM sample buffer."""
        pynvml.nvmlGpmSampleFree(sample)

    def nvmlGpmSampleGet(self, handle: Any, sample: Any) -> None:
        """Fill ``sample`` with the GPU's counters now."""
        pynvml.nvmlGpmSampleGet(handle, sample)

    def nvmlGpmMetricsGet(self, sample1: Any, sample2: Any,
                          metric_ids: list[int]) -> dict[int, float | Exception]:
        """Metrics (percent) between two samples; a metric that failed maps to its NVMLError."""
        request = pynvml.c_nvmlGpmMetricsGet_t()
        request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(metric_ids)
        request.sample1 = sample1
        request.sample2 = sample2
        for i, metric_id in enumerate(metric_ids):
            request.metrics[i].metricId = metric_id
        pynvml.nvmlGpmMetricsGet(request)
        out: dict[int, float | Exception] = {}
        for i, metric_id in enumerate(metric_ids):
            m = request.metrics[i]
            ret = int(m.nvmlReturn)
            out[metric_id] = float(m.value) if ret == pynvml.NVML_SUCCESS else pynvml.NVMLError(ret)
        return out

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[tuple[int, int | None]]:
        """(pid, used GPU memory in bytes or None where NVML cannot tell) per compute process."""
        return [(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory))
                for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]

    def nvmlDeviceGetPcieThroughput(self, handle: Any, counter: int) -> int:
        """PCIe throughput in KB/s over NVML's 20 ms window (the call takes that long)."""
        return int(pynvml.nvmlDeviceGetPcieThroughput(handle, counter))
