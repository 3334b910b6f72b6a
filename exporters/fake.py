"""A fake NVML device layer for tests and demos (``--fake-gpus N``).

It raises the real ``pynvml.NVMLError_*`` classes, so the exporter's error handling is the
code that runs against a real driver. Values are deterministic unless ``vary=True`` (demos).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pynvml

from .backend import MemoryInfo

GiB = 1 << 30


def nvml_error(code: int) -> pynvml.NVMLError:
    """The real pynvml exception for an NVML return code (its NVMLError_* subclass)."""
    return pynvml.NVMLError(code)


@dataclass
class FakeGpu:
    """One fake GPU. Percentages and NVML units, as NVML returns them."""

    index: int = 0
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = ""
    pci_bus_id: str = ""
    memory_total: int = 80 * GiB
    memory_used: int = 20 * GiB
    memory_reserved: int = 512 << 20
    utilization: int = 40
    memory_utilization: int = 20
    power_mw: int = 250_000
    power_limit_mw: int = 700_000
    energy_mj: int = 1_000_000_000
    temperature: int = 45
    sm_clock_mhz: int = 1980
    memory_clock_mhz: int = 2619
    compute_capability: tuple[int, int] = (9, 0)
    gpm: bool = True
    gpm_percent: dict[int, float] = field(default_factory=lambda: {
        pynvml.NVML_GPM_METRIC_SM_UTIL: 35.0,
        pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: 12.5,
        pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 10.0,
        pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: 25.0,
    })
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    pcie_tx_kbps: int = 1000
    pcie_rx_kbps: int = 2000
    # failure injection
    errors: dict[str, int] = field(default_factory=dict)   # NVML function -> error code raised
    lost: bool = False                                      # every call raises GpuIsLost
    hang: dict[str, threading.Event] = field(default_factory=dict)  # function blocks until set

    def __post_init__(self) -> None:
        if not self.uuid:
            self.uuid = f"GPU-fa4e{self.index:04x}-0000-4000-8000-{self.index:012x}"
        if not self.pci_bus_id:
            self.pci_bus_id = f"00000000:{0x18 + self.index:02X}:00.0"

    def unsupported(self, *functions: str) -> "FakeGpu":
        """Make these NVML functions raise NotSupported on this GPU."""
        for fn in functions:
            self.errors[fn] = pynvml.NVML_ERROR_NOT_SUPPORTED
        return self


@dataclass
class _Handle:
    gpu: FakeGpu


class FakeNvml:
    """Implements ``exporters.backend.NvmlBackend`` over a list of ``FakeGpu``."""

    def __init__(self, gpus: int | list[FakeGpu] = 2, *, driver_version: str = "570.124.06",
                 init_failures: int = 0, init_error: int = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
                 vary: bool = False) -> None:
        self.gpus = [FakeGpu(index=i) for i in range(gpus)] if isinstance(gpus, int) else gpus
        self.driver_version = driver_version
        self.init_failures = init_failures     # the next N nvmlInit calls fail (-1: always)
        self.init_error = init_error
        self.init_hang: threading.Event | None = None
        self.vary = vary
        self.initialised = False
        self.calls: Counter[str] = Counter()
        self._clock_us = itertools.count(1_000_000, 1000)
        self._start = time.monotonic()
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------
    def _enter(self, function: str) -> None:
        """Count the call; raise Uninitialized before nvmlInit, as NVML does."""
        with self._lock:
            self.calls[function] += 1
        if not self.initialised:
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, function: str, handle: _Handle) -> FakeGpu:
        """Enter a per-GPU call: hang, lost and injected errors apply here."""
        self._enter(function)
        gpu = handle.gpu
        event = gpu.hang.get(function)
        if event is not None:
            event.wait()
        if gpu.lost:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        if function in gpu.errors:
            raise nvml_error(gpu.errors[function])
        return gpu

    def _wave(self, gpu: FakeGpu, base: float, swing: float) -> float:
        """A slow load wave for demos; ``base`` when ``vary`` is off."""
        if not self.vary:
            return base
        t = time.monotonic() - self._start
        return max(0.0, min(100.0, base + swing * math.sin(t / 7.0 + gpu.index)))

    # -- the NvmlBackend interface --------------------------------------------------------
    def nvmlInit(self) -> None:
        with self._lock:
            self.calls["nvmlInit"] += 1
        if self.init_hang is not None:
            self.init_hang.wait()
        if self.init_failures:
            if self.init_failures > 0:
                self.init_failures -= 1
            raise nvml_error(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(self.gpus[index])

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetPciInfo(self, handle: Any) -> str:
        return self._gpu("nvmlDeviceGetPciInfo", handle).pci_bus_id

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> MemoryInfo:
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        reserved = None if "nvmlDeviceGetMemoryInfo_v2" in gpu.errors else gpu.memory_reserved
        used = gpu.memory_used
        free = gpu.memory_total - used - (reserved or 0)
        return MemoryInfo(gpu.memory_total, used, free, reserved)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> tuple[float, float]:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return (float(round(self._wave(gpu, gpu.utilization, 40))),
                float(round(self._wave(gpu, gpu.memory_utilization, 15))))

    def nvmlDeviceGetSamples(self, handle: Any, sample_type: int,
                             last_seen_us: int) -> list[tuple[int, float]]:
        gpu = self._gpu("nvmlDeviceGetSamples", handle)
        base = (gpu.utilization if sample_type == pynvml.NVML_GPU_UTILIZATION_SAMPLES
                else gpu.memory_utilization)
        centre = self._wave(gpu, base, 40)
        # two samples around the centre; their mean is the centre (deterministic)
        return [(next(self._clock_us), centre - 5.0), (next(self._clock_us), centre + 5.0)]

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        gpu = self._gpu("nvmlDeviceGetPowerUsage", handle)
        return int(gpu.power_mw + (self._wave(gpu, 50, 50) - 50) * 4000)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        gpu = self._gpu("nvmlDeviceGetTotalEnergyConsumption", handle)
        if self.vary:
            gpu.energy_mj += gpu.power_mw // 10
        return gpu.energy_mj

    def nvmlDeviceGetTemperature(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetTemperature", handle).temperature

    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int:
        gpu = self._gpu("nvmlDeviceGetClockInfo", handle)
        return gpu.sm_clock_mhz if clock_type == pynvml.NVML_CLOCK_SM else gpu.memory_clock_mhz

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        return self._gpu("nvmlDeviceGetCudaComputeCapability", handle).compute_capability

    def nvmlGpmQueryDeviceSupport(self, handle: Any) -> bool:
        return self._gpu("nvmlGpmQueryDeviceSupport", handle).gpm

    def nvmlGpmSampleAlloc(self) -> Any:
        self._enter("nvmlGpmSampleAlloc")
        return {"gpu": None}

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        self._enter("nvmlGpmSampleFree")

    def nvmlGpmSampleGet(self, handle: Any, sample: Any) -> None:
        sample["gpu"] = self._gpu("nvmlGpmSampleGet", handle)

    def nvmlGpmMetricsGet(self, sample1: Any, sample2: Any,
                          metric_ids: list[int]) -> dict[int, float | Exception]:
        self._enter("nvmlGpmMetricsGet")
        gpu: FakeGpu = sample2["gpu"]
        out: dict[int, float | Exception] = {}
        for metric_id in metric_ids:
            if metric_id in gpu.gpm_percent:
                out[metric_id] = self._wave(gpu, gpu.gpm_percent[metric_id], 10)
            else:
                out[metric_id] = nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return out

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[tuple[int, int | None]]:
        return list(self._gpu("nvmlDeviceGetComputeRunningProcesses", handle).processes)

    def nvmlDeviceGetPcieThroughput(self, handle: Any, counter: int) -> int:
        gpu = self._gpu("nvmlDeviceGetPcieThroughput", handle)
        return gpu.pcie_tx_kbps if counter == pynvml.NVML_PCIE_UTIL_TX_BYTES else gpu.pcie_rx_kbps
