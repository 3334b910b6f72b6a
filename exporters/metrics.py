"""The exported metric names, their help text and kind: the contract with dashboards and analysis."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric family."""

    name: str
    help: str
    counter: bool = False


GPU_LABELS = ("gpu", "UUID")  # dcgm-exporter's spelling, so dashboards join

NVML_UP = MetricSpec("nvml_up", "1 when NVML is initialised, else 0.")
GPU_UP = MetricSpec("nvml_gpu_up", "1 when the GPU answered the last sample in time, else 0.")
GPU_INFO = MetricSpec("nvml_gpu_info", "GPU identity; always 1.")

UTILIZATION = MetricSpec(
    "nvml_gpu_utilization_ratio",
    "NVML GPU utilization (0-1): fraction of time one or more kernels ran, averaged over the "
    "sampling interval. Not SM activity.")
MEMORY_UTILIZATION = MetricSpec(
    "nvml_gpu_memory_utilization_ratio",
    "NVML memory-controller utilization (0-1): fraction of time device memory was read or written.")
MEMORY_USED = MetricSpec("nvml_gpu_memory_used_bytes", "Device memory used, bytes.")
MEMORY_FREE = MetricSpec("nvml_gpu_memory_free_bytes", "Device memory free, bytes.")
MEMORY_RESERVED = MetricSpec("nvml_gpu_memory_reserved_bytes",
                             "Device memory reserved by the driver and firmware, bytes.")
MEMORY_TOTAL = MetricSpec("nvml_gpu_memory_total_bytes", "Device memory total, bytes.")
POWER = MetricSpec("nvml_gpu_power_watts", "Board power draw, watts.")
POWER_LIMIT = MetricSpec("nvml_gpu_power_limit_watts", "Enforced power limit, watts.")
ENERGY = MetricSpec("nvml_gpu_energy_joules_total",
                    "Energy used since the driver was loaded, joules.", counter=True)
TEMPERATURE = MetricSpec("nvml_gpu_temperature_celsius", "GPU die temperature, degrees Celsius.")
SM_CLOCK = MetricSpec("nvml_gpu_sm_clock_hertz", "Current SM clock, hertz.")
MEMORY_CLOCK = MetricSpec("nvml_gpu_memory_clock_hertz", "Current memory clock, hertz.")
SM_ACTIVE = MetricSpec("nvml_gpu_sm_active_ratio",
                       "GPM: fraction of SMs busy over the sampling interval (0-1).")
SM_OCCUPANCY = MetricSpec("nvml_gpu_sm_occupancy_ratio",
                          "GPM: resident warps over the theoretical maximum (0-1).")
TENSOR_ACTIVE = MetricSpec("nvml_gpu_tensor_active_ratio",
                           "GPM: fraction of time SMs ran any tensor-core instruction (0-1).")
DRAM_ACTIVE = MetricSpec("nvml_gpu_dram_active_ratio",
                         "GPM: DRAM bandwidth used over the theoretical maximum (0-1).")
PCIE_TX = MetricSpec("nvml_gpu_pcie_tx_bytes_per_second", "PCIe transmit throughput, bytes/s.")
PCIE_RX = MetricSpec("nvml_gpu_pcie_rx_bytes_per_second", "PCIe receive throughput, bytes/s.")
PROCESS_MEMORY = MetricSpec("nvml_gpu_process_memory_used_bytes",
                            "Device memory used by one compute process, bytes.")

# Per-GPU value metrics, in exposition order.
GPU_VALUE_METRICS = (
    UTILIZATION, MEMORY_UTILIZATION, MEMORY_USED, MEMORY_FREE, MEMORY_RESERVED, MEMORY_TOTAL,
    POWER, POWER_LIMIT, ENERGY, TEMPERATURE, SM_CLOCK, MEMORY_CLOCK,
    SM_ACTIVE, SM_OCCUPANCY, TENSOR_ACTIVE, DRAM_ACTIVE, PCIE_TX, PCIE_RX,
)

SCRAPE_DURATION = MetricSpec("exporter_scrape_duration_seconds",
                             "Time this exporter took to build the /metrics answer, seconds.")
NVML_ERRORS = MetricSpec("exporter_nvml_errors_total",
                         "NVML calls that failed, by NVML function and error.", counter=True)

PROCESS_CPU = MetricSpec(
    "server_process_cpu_seconds_total",
    "CPU time (user+system, including reaped children) of the selected process tree, seconds.",
    counter=True)
PROCESS_RSS = MetricSpec("server_process_resident_memory_bytes",
                         "Resident memory summed over the selected process tree, bytes.")
PROCESS_COUNT = MetricSpec("server_processes",
                           "Processes in the selected process tree (0 when nothing matches).")
