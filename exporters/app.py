"""The exporter assembled: sampler, collectors, and the two answers the HTTP server gives."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from prometheus_client.registry import CollectorRegistry

from .backend import NvmlBackend
from .collectors import NvmlCollector, NvmlErrorsCollector, render
from .process import ProcessSelector, ProcessTreeCollector
from .reader import ReadOptions
from .sampler import Sampler


@dataclass
class ExporterConfig:
    """Everything the CLI can set, minus where to listen."""

    gpus: Sequence[str] = ()
    interval: float = 1.0
    stale_after: float | None = None
    pcie: bool = False
    process_memory: bool = False
    processes: list[ProcessSelector] = field(default_factory=list)


class Exporter:
    """Owns the sampler and the registry; renders /metrics and /healthz."""

    def __init__(self, backend: NvmlBackend, config: ExporterConfig, *,
                 clock: Callable[[], float] = time.monotonic,
                 render_clock: Callable[[], float] = time.perf_counter) -> None:
        self.config = config
        self.sampler = Sampler(backend, config.gpus, interval=config.interval,
                               stale_after=config.stale_after,
                               options=ReadOptions(pcie=config.pcie,
                                                   process_memory=config.process_memory),
                               clock=clock)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NvmlCollector(self.sampler, config.process_memory))
        if config.processes:
            self.registry.register(ProcessTreeCollector(config.processes))
        self.registry.register(NvmlErrorsCollector(self.sampler.errors))
        self._render_clock = render_clock

    def metrics(self) -> bytes:
        """The /metrics body."""
        return render(self.registry, self._render_clock)

    def health(self) -> dict[str, Any]:
        """The /healthz body: NVML state, GPUs and how old the last sampling round is."""
        snap = self.sampler.snapshot()
        age = snap.age_s
        return {
            "nvml_up": snap.nvml_up,
            "gpus": [{"gpu": str(g.identity.index), "UUID": g.identity.uuid, "up": g.up}
                     for g in snap.gpus],
            "last_sample_age_seconds": None if age is None else round(age, 3),
            "stale": age is None or age > self.sampler.stale_after,
        }

    def start(self) -> None:
        """Start background sampling."""
        self.sampler.start()

    def stop(self) -> None:
        """Stop sampling and release NVML."""
        self.sampler.stop()
