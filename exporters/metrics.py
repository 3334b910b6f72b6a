"""The exported metric families: name, help text and kind, the contract with dashboards and
analysis. The names themselves are spelled once, in ``core.rundir.series`` (shared with the
capture and the analysis)."""

from __future__ import annotations

from dataclasses import dataclass

from core.rundir import series


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric family."""

    name: str
    help: str
    counter: bool = False


GPU_LABELS = series.GPU_LABELS  # dcgm-exporter's spelling, so dashboards join

NVML_UP = MetricSpec(series.NVML_UP, "1 when NVML is initialised, else 0.")
GPU_UP = MetricSpec(series.GPU_UP, "1 when the GPU answered the last sample in time, else 0.")
GPU_INFO = MetricSpec(series.GPU_INFO, "GPU identity; always 1.")

UTILIZATION = MetricSpec(
    series.GPU_UTILIZATION,
    "NVML GPU utilization (0-1): fraction of time one or more kernels ran, averaged over the "
    "sampling interval. Not SM activity.")
MEMORY_UTILIZATION = MetricSpec(
    series.GPU_MEMORY_UTILIZATION,
    "NVML memory-controller utilization (0-1): fraction of time device memory was read or written.")
MEMORY_USED = MetricSpec(series.GPU_MEMORY_USED, "Device memory used, bytes.")
MEMORY_FREE = MetricSpec(series.GPU_MEMORY_FREE, "Device memory free, bytes.")
MEMORY_RESERVED = MetricSpec(series.GPU_MEMORY_RESERVED,
                             "Device memory reserved by the driver and firmware, bytes.")
MEMORY_TOTAL = MetricSpec(series.GPU_MEMORY_TOTAL, "Device memory total, bytes.")
POWER = MetricSpec(series.GPU_POWER, "Board power draw, watts.")
POWER_LIMIT = MetricSpec(series.GPU_POWER_LIMIT, "Enforced power limit, watts.")
ENERGY = MetricSpec(series.GPU_ENERGY,
                    "Energy used since the driver was loaded, joules.", counter=True)
TEMPERATURE = MetricSpec(series.GPU_TEMPERATURE, "GPU die temperature, degrees Celsius.")
SM_CLOCK = MetricSpec(series.GPU_SM_CLOCK, "Current SM clock, hertz.")
MEMORY_CLOCK = MetricSpec(series.GPU_MEMORY_CLOCK, "Current memory clock, hertz.")
SM_ACTIVE = MetricSpec(series.GPU_SM_ACTIVE,
                       "GPM: fraction of SMs busy over the sampling interval (0-1).")
SM_OCCUPANCY = MetricSpec(series.GPU_SM_OCCUPANCY,
                          "GPM: resident warps over the theoretical maximum (0-1).")
TENSOR_ACTIVE = MetricSpec(series.GPU_TENSOR_ACTIVE,
                           "GPM: fraction of time SMs ran any tensor-core instruction (0-1).")
DRAM_ACTIVE = MetricSpec(series.GPU_DRAM_ACTIVE,
                         "GPM: DRAM bandwidth used over the theoretical maximum (0-1).")
PCIE_TX = MetricSpec(series.GPU_PCIE_TX, "PCIe transmit throughput, bytes/s.")
PCIE_RX = MetricSpec(series.GPU_PCIE_RX, "PCIe receive throughput, bytes/s.")
PROCESS_MEMORY = MetricSpec(series.GPU_PROCESS_MEMORY,
                            "Device memory used by one compute process, bytes.")

# Per-GPU value metrics, in exposition order.
GPU_VALUE_METRICS = (
    UTILIZATION, MEMORY_UTILIZATION, MEMORY_USED, MEMORY_FREE, MEMORY_RESERVED, MEMORY_TOTAL,
    POWER, POWER_LIMIT, ENERGY, TEMPERATURE, SM_CLOCK, MEMORY_CLOCK,
    SM_ACTIVE, SM_OCCUPANCY, TENSOR_ACTIVE, DRAM_ACTIVE, PCIE_TX, PCIE_RX,
)

SCRAPE_DURATION = MetricSpec(series.EXPORTER_SCRAPE_DURATION,
                             "Time this exporter took to build the /metrics answer, seconds.")
NVML_ERRORS = MetricSpec(series.EXPORTER_NVML_ERRORS,
                         "NVML calls that failed, by NVML function and error.", counter=True)

PROCESS_CPU = MetricSpec(
    series.PROCESS_CPU,
    "CPU time (user+system, including reaped children) of the selected process tree, seconds.",
    counter=True)
PROCESS_RSS = MetricSpec(series.PROCESS_RSS,
                         "Resident memory summed over the selected process tree, bytes.")
PROCESS_COUNT = MetricSpec(series.PROCESS_COUNT,
                           "Processes in the selected process tree (0 when nothing matches).")
