"""NVML -> Prometheus exporter for the load-testing suite, plus a process-tree collector.

Run it with ``llm-gpu-exporter`` or ``python -m exporters`` (see the README, "GPU exporter").
Public surface: ``Exporter``/``ExporterConfig`` (the assembled exporter), ``Sampler``,
``NvmlBackend``/``PynvmlBackend`` (the device layer; ``exporters.fake.FakeNvml`` for tests),
``ProcessSelector``/``ProcessTreeCollector`` and ``metrics`` (the exported names).
"""

from .app import Exporter, ExporterConfig
from .backend import NvmlBackend, PynvmlBackend
from .process import ProcessSelector, ProcessTreeCollector
from .sampler import Sampler, Snapshot

__all__ = ["Exporter", "ExporterConfig", "NvmlBackend", "PynvmlBackend", "ProcessSelector",
           "ProcessTreeCollector", "Sampler", "Snapshot"]
