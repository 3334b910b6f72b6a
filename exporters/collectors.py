"""prometheus_client collectors over the sampler's snapshot, and the /metrics rendering."""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from . import metrics as m
from .errors import ErrorCounter
from .sampler import Sampler, Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _family(spec: m.MetricSpec, labels: Iterable[str]) -> GaugeMetricFamily | CounterMetricFamily:
    cls = CounterMetricFamily if spec.counter else GaugeMetricFamily
    return cls(spec.name, spec.help, labels=list(labels))


def gpu_families(snap: Snapshot, process_memory: bool = False) -> Iterator[Metric]:
    """The NVML metric families of one snapshot; series a GPU lacks are left out."""
    up = GaugeMetricFamily(m.NVML_UP.name, m.NVML_UP.help, value=1.0 if snap.nvml_up else 0.0)
    yield up
    if not snap.gpus:
        return
    gpu_up = _family(m.GPU_UP, m.GPU_LABELS)
    info = _family(m.GPU_INFO, (*m.GPU_LABELS, "name", "pci_bus_id", "driver_version"))
    for g in snap.gpus:
        ids = [str(g.identity.index), g.identity.uuid]
        gpu_up.add_metric(ids, 1.0 if g.up else 0.0)
        info.add_metric([*ids, g.identity.name, g.identity.pci_bus_id, snap.driver_version], 1.0)
    yield gpu_up
    yield info
    for spec in m.GPU_VALUE_METRICS:
        family = _family(spec, m.GPU_LABELS)
        for g in snap.gpus:
            if spec.name in g.values:
                family.add_metric([str(g.identity.index), g.identity.uuid], g.values[spec.name])
        if family.samples:
            yield family
    if process_memory:
        family = _family(m.PROCESS_MEMORY, (*m.GPU_LABELS, "pid"))
        for g in snap.gpus:
            for pid, used in sorted(g.processes.items()):
                family.add_metric([str(g.identity.index), g.identity.uuid, str(pid)], float(used))
        if family.samples:
            yield family


class NvmlCollector:
    """Exports the GPUs' latest sample (never calls NVML itself)."""

    def __init__(self, sampler: Sampler, process_memory: bool = False) -> None:
        self._sampler = sampler
        self._process_memory = process_memory

    def collect(self) -> Iterator[Metric]:
        """The families of the sampler's current snapshot."""
        yield from gpu_families(self._sampler.snapshot(), self._process_memory)


class NvmlErrorsCollector:
    """Exports ``exporter_nvml_errors_total{function,error}``."""

    def __init__(self, errors: ErrorCounter) -> None:
        self._errors = errors

    def collect(self) -> Iterator[Metric]:
        """One series per (function, error) seen so far."""
        family = _family(m.NVML_ERRORS, ("function", "error"))
        for (function, error), count in self._errors.items():
            family.add_metric([function, error], float(count))
        if family.samples:
            yield family


class _Families:
    """A registry-like wrapper so generate_latest can encode a ready list of families."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render(registry: CollectorRegistry, clock: Callable[[], float] = time.perf_counter) -> bytes:
    """The exposition text of every collector plus ``exporter_scrape_duration_seconds``."""
    start = clock()
    families = list(registry.collect())
    duration = GaugeMetricFamily(m.SCRAPE_DURATION.name, m.SCRAPE_DURATION.help,
                                 value=max(0.0, clock() - start))
    return generate_latest(_Families([*families, duration]))
