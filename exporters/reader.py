"""Reads one GPU: every field NVML offers, in base units, keeping per-GPU sampling state.

A reader runs on its GPU's own worker thread. It never raises: an unsupported field is left
out (and never asked again), a lost GPU yields a sample with ``up=False``, and every error is
counted in the shared ``ErrorCounter``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any, Callable

import pynvml

from . import metrics as m
from .backend import NvmlBackend
from .errors import ErrorCounter, ErrorKind, OnceLog, classify, error_name

log = logging.getLogger("exporters")

_MISSING = object()  # a call that failed: its field is left out of this sample

GPM_METRICS: dict[int, m.MetricSpec] = {
    pynvml.NVML_GPM_METRIC_SM_UTIL: m.SM_ACTIVE,
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: m.SM_OCCUPANCY,
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: m.TENSOR_ACTIVE,
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: m.DRAM_ACTIVE,
}

_QUIET_ERRORS = ("NotFound", "NoData")  # "no new data right now", normal on an idle GPU


@dataclass(frozen=True)
class GpuIdentity:
    """Who a GPU is: NVML index (not CUDA's), UUID, product name, PCI bus id."""

    index: int
    uuid: str
    name: str = ""
    pci_bus_id: str = ""


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU. ``values`` maps metric name to a base-unit value."""

    up: bool
    taken_at: float
    values: dict[str, float] = field(default_factory=dict)
    processes: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReadOptions:
    """Optional, costlier fields."""

    pcie: bool = False             # two 20 ms NVML calls per GPU per sample
    process_memory: bool = False


class _Gone(Exception):
    """The GPU (GPU_LOST) or the whole library (NVML_DOWN) stopped answering."""

    def __init__(self, kind: ErrorKind, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.kind = kind
        self.error = error_name(exc)


class DeviceReader:
    """Reads one GPU's fields; keeps the state that spans samples (sample timestamps, GPM)."""

    def __init__(self, backend: NvmlBackend, handle: Any, identity: GpuIdentity,
                 options: ReadOptions, errors: ErrorCounter, once: OnceLog,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._b = backend
        self._h = handle
        self.identity = identity
        self._options = options
        self._errors = errors
        self._once = once
        self._clock = clock
        self._unsupported: set[str] = set()
        self._last_seen_us = {pynvml.NVML_GPU_UTILIZATION_SAMPLES: 0,
                              pynvml.NVML_MEMORY_UTILIZATION_SAMPLES: 0}
        self._gpm_buffers: list[Any] = []
        self._gpm_index = 0
        self._gpm_have_previous = False
        self._gpm_ids = list(GPM_METRICS)
        self._lost = False
        self.current_call: str | None = None   # the NVML function in flight (for hang reports)
        self.nvml_down = False                 # set when the library itself failed

    # -- plumbing -------------------------------------------------------------------------
    def _where(self) -> str:
        return f"GPU {self.identity.index} ({self.identity.uuid})"

    def _call(self, key: str, func: Callable[..., Any], *args: Any) -> Any:
        """Call NVML; on failure count it, log it once, and return ``_MISSING``."""
        if key in self._unsupported:
            return _MISSING
        name = getattr(func, "__name__", key)
        self.current_call = name
        try:
            return func(*args)
        except Exception as exc:  # noqa: BLE001 - never let one field take the exporter down
            return self._failed(key, name, exc)
        finally:
            self.current_call = None

    def _failed(self, key: str, function: str, exc: BaseException) -> Any:
        err = error_name(exc)
        self._errors.add(function, err)
        kind = classify(exc)
        if kind in (ErrorKind.GPU_LOST, ErrorKind.NVML_DOWN):
            raise _Gone(kind, exc) from exc
        if kind is ErrorKind.UNSUPPORTED:
            self._unsupported.add(key)
            self._once.log((self.identity.uuid, key), logging.INFO,
                           "%s: %s is not available (%s): its series are left out",
                           self._where(), function, err)
        else:
            level = logging.DEBUG if err in _QUIET_ERRORS else logging.WARNING
            self._once.log((self.identity.uuid, key, err), level,
                           "%s: %s failed (%s): value left out of this sample, will retry",
                           self._where(), function, err)
        return _MISSING

    # -- the sample -----------------------------------------------------------------------
    def read(self) -> GpuSample:
        """Read every field once; never raises."""
        values: dict[str, float] = {}
        processes: dict[int, int] = {}
        try:
            self._read_memory(values)
            self._read_utilization(values)
            self._read_power(values)
            self._read_thermal_and_clocks(values)
            self._read_gpm(values)
            if self._options.pcie:
                self._read_pcie(values)
            if self._options.process_memory:
                processes = self._read_processes()
        except _Gone as gone:
            if gone.kind is ErrorKind.NVML_DOWN:
                self.nvml_down = True
            self._gpm_have_previous = False
            if self._once.log(("lost", self.identity.uuid), logging.WARNING,
                              "%s stopped answering (%s): nvml_gpu_up 0, retrying every interval",
                              self._where(), gone.error):
                self._lost = True
            return GpuSample(up=False, taken_at=self._clock())
        except Exception:  # noqa: BLE001 - a bug here must not stop sampling
            log.exception("%s: unexpected error while reading; sample dropped", self._where())
            return GpuSample(up=False, taken_at=self._clock())
        if self._lost:
            self._lost = False
            self._once.forget(("lost", self.identity.uuid))
            log.warning("%s answers again", self._where())
        return GpuSample(up=True, taken_at=self._clock(), values=values, processes=processes)

    def _read_memory(self, out: dict[str, float]) -> None:
        mem = self._call("memory", self._b.nvmlDeviceGetMemoryInfo, self._h)
        if mem is _MISSING:
            return
        out[m.MEMORY_USED.name] = float(mem.used)
        out[m.MEMORY_FREE.name] = float(mem.free)
        out[m.MEMORY_TOTAL.name] = float(mem.total)
        if mem.reserved is not None:
            out[m.MEMORY_RESERVED.name] = float(mem.reserved)
        else:
            self._once.log((self.identity.uuid, "memory_reserved"), logging.INFO,
                           "%s: the driver has no nvmlDeviceGetMemoryInfo_v2: "
                           "nvml_gpu_memory_reserved_bytes left out", self._where())

    def _averaged(self, key: str, sample_type: int) -> float | None:
        """Mean of the NVML samples since the last read, as a 0-1 ratio (None: no samples)."""
        samples = self._call(key, self._b.nvmlDeviceGetSamples, self._h, sample_type,
                             self._last_seen_us[sample_type])
        if samples is _MISSING or not samples:
            return None
        self._last_seen_us[sample_type] = max(ts for ts, _ in samples)
        valid = [v for _, v in samples if 0.0 <= v <= 100.0]  # drop the odd corrupt sample
        return fmean(valid) / 100.0 if valid else None

    def _read_utilization(self, out: dict[str, float]) -> None:
        gpu = self._averaged("gpu_samples", pynvml.NVML_GPU_UTILIZATION_SAMPLES)
        mem = self._averaged("memory_samples", pynvml.NVML_MEMORY_UTILIZATION_SAMPLES)
        if gpu is None or mem is None:
            rates = self._call("utilization", self._b.nvmlDeviceGetUtilizationRates, self._h)
            if rates is not _MISSING:
                gpu = rates[0] / 100.0 if gpu is None else gpu
                mem = rates[1] / 100.0 if mem is None else mem
        if gpu is not None:
            out[m.UTILIZATION.name] = gpu
        if mem is not None:
            out[m.MEMORY_UTILIZATION.name] = mem

    def _read_power(self, out: dict[str, float]) -> None:
        power = self._call("power", self._b.nvmlDeviceGetPowerUsage, self._h)
        if power is not _MISSING:
            out[m.POWER.name] = power / 1000.0
        limit = self._call("power_limit", self._b.nvmlDeviceGetEnforcedPowerLimit, self._h)
        if limit is not _MISSING:
            out[m.POWER_LIMIT.name] = limit / 1000.0
        energy = self._call("energy", self._b.nvmlDeviceGetTotalEnergyConsumption, self._h)
        if energy is not _MISSING:
            out[m.ENERGY.name] = energy / 1000.0

    def _read_thermal_and_clocks(self, out: dict[str, float]) -> None:
        temp = self._call("temperature", self._b.nvmlDeviceGetTemperature, self._h)
        if temp is not _MISSING:
            out[m.TEMPERATURE.name] = float(temp)
        sm = self._call("sm_clock", self._b.nvmlDeviceGetClockInfo, self._h, pynvml.NVML_CLOCK_SM)
        if sm is not _MISSING:
            out[m.SM_CLOCK.name] = sm * 1e6
        mem = self._call("memory_clock", self._b.nvmlDeviceGetClockInfo, self._h,
                         pynvml.NVML_CLOCK_MEM)
        if mem is not _MISSING:
            out[m.MEMORY_CLOCK.name] = mem * 1e6

    def _gpm_ready(self) -> bool:
        """Whether GPM can be read: checked once, buffers allocated once."""
        if self._gpm_buffers:
            return True
        supported = self._call("gpm", self._b.nvmlGpmQueryDeviceSupport, self._h)
        if supported is _MISSING:
            return False
        if not supported:
            self._unsupported.add("gpm")
            self._once.log((self.identity.uuid, "gpm"), logging.INFO,
                           "%s has no GPM counters (Hopper or later needed): "
                           "SM/tensor/DRAM activity series left out", self._where())
            return False
        buffers = [self._call("gpm", self._b.nvmlGpmSampleAlloc) for _ in range(2)]
        if any(b is _MISSING for b in buffers):
            return False
        self._gpm_buffers = buffers
        return True

    def _read_gpm(self, out: dict[str, float]) -> None:
        if "gpm" in self._unsupported or not self._gpm_ready():
            return
        current = self._gpm_buffers[self._gpm_index]
        if self._call("gpm", self._b.nvmlGpmSampleGet, self._h, current) is _MISSING:
            self._gpm_have_previous = False
            return
        if self._gpm_have_previous and self._gpm_ids:
            previous = self._gpm_buffers[1 - self._gpm_index]
            result = self._call("gpm", self._b.nvmlGpmMetricsGet, previous, current, self._gpm_ids)
            if result is not _MISSING:
                self._store_gpm(result, out)
        self._gpm_have_previous = True
        self._gpm_index = 1 - self._gpm_index

    def _store_gpm(self, result: dict[int, float | Exception], out: dict[str, float]) -> None:
        for metric_id, value in result.items():
            spec = GPM_METRICS.get(metric_id)
            if spec is None:
                continue
            if isinstance(value, Exception):
                self._errors.add("nvmlGpmMetricsGet", error_name(value))
                if classify(value) is ErrorKind.UNSUPPORTED:
                    self._gpm_ids.remove(metric_id)
                    self._once.log((self.identity.uuid, spec.name), logging.INFO,
                                   "%s: GPM metric %s not available (%s): %s left out",
                                   self._where(), metric_id, error_name(value), spec.name)
                continue
            out[spec.name] = value / 100.0

    def _read_pcie(self, out: dict[str, float]) -> None:
        for key, counter, spec in (("pcie_tx", pynvml.NVML_PCIE_UTIL_TX_BYTES, m.PCIE_TX),
                                   ("pcie_rx", pynvml.NVML_PCIE_UTIL_RX_BYTES, m.PCIE_RX)):
            kbps = self._call(key, self._b.nvmlDeviceGetPcieThroughput, self._h, counter)
            if kbps is not _MISSING:
                out[spec.name] = kbps * 1024.0

    def _read_processes(self) -> dict[int, int]:
        procs = self._call("processes", self._b.nvmlDeviceGetComputeRunningProcesses, self._h)
        if procs is _MISSING:
            return {}
        used: dict[int, int] = {}
        for pid, nbytes in procs:
            if nbytes is not None:  # NVML cannot always tell (e.g. some containers)
                used[pid] = used.get(pid, 0) + nbytes
        return used

    def close(self) -> None:
        """Free the GPM buffers (best effort)."""
        for buf in self._gpm_buffers:
            try:
                self._b.nvmlGpmSampleFree(buf)
            except Exception:  # noqa: BLE001
                pass
        self._gpm_buffers = []
