"""CPU and memory of a model server's process tree, for servers that run on the CPU.

A selector picks root processes (``--process-pid PID`` or ``--process-match REGEX`` on the
full command line); the tree is the roots plus all their descendants, counted once each.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import metrics as m


@dataclass(frozen=True)
class TreeUsage:
    """Totals over one selected process tree."""

    count: int
    cpu_seconds: float
    rss_bytes: int


@dataclass(frozen=True)
class ProcessSelector:
    """A root pid, or a regex searched in each process's full command line."""

    label: str
    pid: int | None = None
    pattern: re.Pattern[str] | None = None

    @classmethod
    def for_pid(cls, pid: int) -> "ProcessSelector":
        """Select the tree under ``pid``."""
        return cls(label=f"pid:{pid}", pid=pid)

    @classmethod
    def for_regex(cls, regex: str) -> "ProcessSelector":
        """Select the trees under every process whose command line matches ``regex``."""
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise ValueError(f"--process-match {regex!r} is not a valid regular expression: "
                             f"{exc}") from exc
        return cls(label=f"match:{regex}", pattern=pattern)

    def roots(self, exclude: set[int]) -> list[psutil.Process]:
        """The processes this selector names (the exporter itself excluded)."""
        if self.pid is not None:
            if self.pid in exclude:
                return []
            try:
                return [psutil.Process(self.pid)]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                return []
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            if proc.pid in exclude:
                continue
            cmdline = proc.info.get("cmdline") or []
            if self.pattern is not None and self.pattern.search(" ".join(cmdline)):
                found.append(proc)
        return found


def tree(roots: Iterable[psutil.Process], exclude: set[int]) -> list[psutil.Process]:
    """Roots and their descendants, each once, in pid order."""
    members: dict[int, psutil.Process] = {}
    for root in roots:
        members.setdefault(root.pid, root)
        try:
            for child in root.children(recursive=True):
                if child.pid not in exclude:
                    members.setdefault(child.pid, child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return [members[pid] for pid in sorted(members)]


def measure(processes: Iterable[psutil.Process]) -> TreeUsage:
    """CPU seconds (own plus reaped children, so the total survives worker exits) and RSS."""
    count, cpu, rss = 0, 0.0, 0
    for proc in processes:
        try:
            with proc.oneshot():
                t = proc.cpu_times()
                zombie = proc.status() == psutil.STATUS_ZOMBIE
                mem_rss = 0 if zombie else proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        # an exited, unreaped child still holds its CPU time (its parent gets it when it reaps)
        cpu += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
        if not zombie:
            count += 1
            rss += mem_rss
    return TreeUsage(count, cpu, rss)


class ProcessTreeCollector:
    """Exports ``server_process_*{selector}`` for each selector, measured at scrape time."""

    def __init__(self, selectors: list[ProcessSelector], self_pid: int | None = None) -> None:
        self._selectors = selectors
        self._exclude = {os.getpid() if self_pid is None else self_pid}

    def usage(self, selector: ProcessSelector) -> TreeUsage:
        """Measure one selector's tree now."""
        return measure(tree(selector.roots(self._exclude), self._exclude))

    def collect(self) -> Iterator[Metric]:
        """Count for every selector; CPU and RSS only where something matched."""
        count = GaugeMetricFamily(m.PROCESS_COUNT.name, m.PROCESS_COUNT.help, labels=["selector"])
        cpu = CounterMetricFamily(m.PROCESS_CPU.name, m.PROCESS_CPU.help, labels=["selector"])
        rss = GaugeMetricFamily(m.PROCESS_RSS.name, m.PROCESS_RSS.help, labels=["selector"])
        for selector in self._selectors:
            usage = self.usage(selector)
            count.add_metric([selector.label], usage.count)
            if usage.count:
                cpu.add_metric([selector.label], usage.cpu_seconds)
                rss.add_metric([selector.label], usage.rss_bytes)
        yield count
        if cpu.samples:
            yield cpu
            yield rss
