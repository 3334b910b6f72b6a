"""The background sampling loop: NVML is read off the scrape path, one worker thread per GPU.

``/metrics`` only reads the latest snapshot, so a hung NVML call can never make a scrape slow.
A GPU whose worker is stuck (or whose last good sample is older than ``stale_after``) is
reported with ``nvml_gpu_up 0`` and no values, while the other GPUs keep reporting.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .backend import NvmlBackend
from .errors import ErrorCounter, OnceLog, error_name
from .reader import DeviceReader, GpuIdentity, GpuSample, ReadOptions
from .selection import describe, resolve, selection_error

log = logging.getLogger("exporters")


@dataclass(frozen=True)
class GpuView:
    """What the collector exports for one GPU."""

    identity: GpuIdentity
    up: bool
    values: dict[str, float]
    processes: dict[int, int]


@dataclass(frozen=True)
class Snapshot:
    """The latest state of every exported GPU."""

    nvml_up: bool
    driver_version: str
    gpus: tuple[GpuView, ...]
    age_s: float | None  # seconds since the sampling loop last finished a round


class _Worker:
    """A daemon thread that runs ``job`` when asked; a stuck job only blocks its own GPU."""

    def __init__(self, name: str, job: Callable[[], None]) -> None:
        self._job = job
        self._go = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopped = False
        self.started_at = 0.0
        self.hang_reported = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._go.wait()
            self._go.clear()
            if self._stopped:
                return
            try:
                self._job()
            finally:
                self._idle.set()

    @property
    def busy(self) -> bool:
        """Whether the last job has not finished."""
        return not self._idle.is_set()

    def submit(self, now: float) -> bool:
        """Start the job unless it is still running; returns whether it started."""
        if self.busy:
            return False
        self._idle.clear()
        self.started_at = now
        self.hang_reported = False
        self._go.set()
        return True

    def wait(self, timeout: float | None) -> bool:
        """Wait for the job to finish; returns whether it did."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        """Let the thread end after its current job (it is a daemon: exit never waits on it)."""
        self._stopped = True
        self._go.set()


class _Device:
    """One exported GPU: its reader, its worker and its latest sample."""

    def __init__(self, reader: DeviceReader) -> None:
        self.reader = reader
        self.sample: GpuSample | None = None
        self.worker = _Worker(f"nvml-gpu{reader.identity.index}", self._read)

    def _read(self) -> None:
        self.sample = self.reader.read()


class Sampler:
    """Initialises NVML (again, after failures), selects GPUs and samples them every interval."""

    def __init__(self, backend: NvmlBackend, selectors: Sequence[str] = (), *,
                 interval: float = 1.0, stale_after: float | None = None,
                 options: ReadOptions | None = None, errors: ErrorCounter | None = None,
                 once: OnceLog | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._backend = backend
        self._selectors = list(selectors)
        self.interval = interval
        self.stale_after = stale_after if stale_after is not None else max(2.0, 3.0 * interval)
        self._options = options or ReadOptions()
        self.errors = errors or ErrorCounter()
        self._once = once or OnceLog()
        self._clock = clock
        self._lock = threading.Lock()
        self._devices: list[_Device] = []
        self._known: list[GpuIdentity] = []    # exported GPUs: reported up 0 while NVML is down
        self._missing: list[GpuIdentity] = []  # exported before, gone after re-init: up 0
        self._nvml_up = False
        self._driver = ""
        self._last_round: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- NVML lifecycle -------------------------------------------------------------------
    def _nvml(self, function: str, *args: Any) -> Any:
        """Call a backend function, counting a failure (the exception propagates)."""
        try:
            return getattr(self._backend, function)(*args)
        except Exception as exc:
            self.errors.add(function, error_name(exc))
            raise

    def _enumerate(self) -> list[tuple[GpuIdentity, object]]:
        """Every GPU NVML sees, with its handle."""
        found = []
        for index in range(int(self._nvml("nvmlDeviceGetCount"))):
            handle = self._nvml("nvmlDeviceGetHandleByIndex", index)
            uuid = str(self._nvml("nvmlDeviceGetUUID", handle))
            name = pci = ""
            try:
                name = str(self._nvml("nvmlDeviceGetName", handle))
                pci = str(self._nvml("nvmlDeviceGetPciInfo", handle))
            except Exception:  # noqa: BLE001 - labels only; counted already
                pass
            found.append((GpuIdentity(index, uuid, name, pci), handle))
        return found

    def initialise(self, strict: bool = False) -> bool:
        """Initialise NVML and pick the GPUs; returns whether NVML is up.

        With ``strict``, a selector that matches no GPU raises ``SelectionError`` (startup);
        otherwise it is logged and the GPUs that do match are exported.
        """
        try:
            self._nvml("nvmlInit")
        except Exception as exc:  # noqa: BLE001
            self._once.log("nvml-init", logging.WARNING,
                           "NVML is not available (%s: %s): serving nvml_up 0 and the process "
                           "metrics; retrying every %.3g s. Install the NVIDIA driver "
                           "(libnvidia-ml.so.1) on a GPU host.", error_name(exc), exc,
                           self.interval)
            return False
        try:
            try:
                self._driver = str(self._nvml("nvmlSystemGetDriverVersion"))
            except Exception:  # noqa: BLE001 - a label only
                self._driver = ""
            found = self._enumerate()
        except Exception as exc:  # noqa: BLE001
            log.warning("NVML initialised but listing GPUs failed (%s); retrying",
                        error_name(exc))
            self._shutdown_nvml()
            return False
        available = [identity for identity, _ in found]
        chosen, unmatched = resolve(self._selectors, available)
        if unmatched:
            err = selection_error(unmatched, available)
            if strict:
                self._shutdown_nvml()
                raise err
            self._once.log(("selection", tuple(unmatched)), logging.ERROR, "%s", err)
        if self._selectors:
            # pin the choice to UUIDs: indices may change when NVML comes back
            self._selectors = [g.uuid for g in chosen] + unmatched
        handles = {identity.uuid: handle for identity, handle in found}
        devices = [_Device(DeviceReader(self._backend, handles[g.uuid], g, self._options,
                                        self.errors, self._once, self._clock)) for g in chosen]
        chosen_uuids = {g.uuid for g in chosen}
        missing = [g for g in self._known + self._missing if g.uuid not in chosen_uuids]
        if missing:
            log.warning("GPU(s) no longer seen by NVML, reported with nvml_gpu_up 0: %s",
                        describe(missing))
        with self._lock:
            self._devices = devices
            self._known = list(chosen)
            self._missing = missing
            self._nvml_up = True
        self._once.forget("nvml-init")
        log.info("NVML up: driver %s; exporting %s", self._driver or "?", describe(chosen))
        return True

    def _shutdown_nvml(self) -> None:
        try:
            self._backend.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass

    def _mark_down(self) -> None:
        """NVML itself failed: drop the readers, initialise again next round."""
        log.warning("NVML stopped answering: nvml_up 0, initialising again next round")
        with self._lock:
            devices, self._devices = self._devices, []
            self._nvml_up = False
        for device in devices:
            device.worker.stop()
            if not device.worker.busy:
                device.reader.close()
        self._shutdown_nvml()

    # -- sampling -------------------------------------------------------------------------
    def tick(self, wait_s: float | None = None) -> None:
        """One round: (re)initialise if needed, then read every GPU whose worker is free.

        Waits up to ``wait_s`` (default ``stale_after``) for the reads; a read still running
        then is left to finish in the background, and its GPU is skipped until it does.
        """
        if not self._nvml_up and not self.initialise():
            self._last_round = self._clock()
            return
        now = self._clock()
        started = []
        for device in list(self._devices):
            if device.worker.submit(now):
                started.append(device)
            else:
                self._report_hang(device, now)
        deadline = now + (self.stale_after if wait_s is None else wait_s)
        for device in started:
            device.worker.wait(max(0.0, deadline - self._clock()))
        if any(d.reader.nvml_down for d in self._devices):
            self._mark_down()
        self._last_round = self._clock()

    def _report_hang(self, device: _Device, now: float) -> None:
        """Count and log once a read that has run longer than ``stale_after``."""
        if device.worker.hang_reported or now - device.worker.started_at <= self.stale_after:
            return
        device.worker.hang_reported = True
        function = device.reader.current_call or "unknown"
        self.errors.add(function, "Hung")
        log.warning("GPU %s (%s): %s has not returned for %.1f s: nvml_gpu_up 0 until it does",
                    device.reader.identity.index, device.reader.identity.uuid, function,
                    now - device.worker.started_at)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            try:
                self.tick(wait_s=self.interval)
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("sampling round failed; continuing")
            self._stop.wait(max(0.0, self.interval - (self._clock() - started)))

    def start(self) -> None:
        """Sample every ``interval`` seconds on a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop sampling and release NVML (never blocks longer than ``timeout`` on a hung call)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            devices, self._devices = self._devices, []
            was_up, self._nvml_up = self._nvml_up, False
        for device in devices:
            device.worker.stop()
        if was_up and not any(d.worker.busy for d in devices):
            for device in devices:
                device.reader.close()
            self._shutdown_nvml()

    # -- what the collectors read ---------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The latest sample of every GPU; stale or lost GPUs come back with ``up=False``."""
        now = self._clock()
        with self._lock:
            devices = list(self._devices)
            known = list(self._known)
            missing = list(self._missing)
            nvml_up = self._nvml_up
        loop_stale = self._last_round is None or now - self._last_round > self.stale_after
        views = []
        if nvml_up:
            for device in devices:
                s = device.sample
                if (s is not None and s.up and not loop_stale
                        and now - s.taken_at <= self.stale_after):
                    views.append(GpuView(device.reader.identity, True, s.values, s.processes))
                else:
                    views.append(GpuView(device.reader.identity, False, {}, {}))
        else:
            views = [GpuView(identity, False, {}, {}) for identity in known]
        views += [GpuView(identity, False, {}, {}) for identity in missing]
        age = None if self._last_round is None else max(0.0, now - self._last_round)
        return Snapshot(nvml_up, self._driver, tuple(views), age)
