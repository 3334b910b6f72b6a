"""NVML error handling: classify an error, count it, log it once."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from enum import Enum
from typing import Hashable

import pynvml

log = logging.getLogger("exporters")


class ErrorKind(Enum):
    """What an NVML error means for the series that asked for it."""

    UNSUPPORTED = "unsupported"  # this GPU/driver never offers the field: leave the series out
    GPU_LOST = "gpu_lost"        # the GPU stopped answering: its nvml_gpu_up goes to 0
    NVML_DOWN = "nvml_down"      # the library/driver is gone: nvml_up 0, initialise again later
    TRANSIENT = "transient"      # anything else: leave the value out of this sample only


def _classes(*names: str) -> tuple[type[BaseException], ...]:
    """The pynvml error classes with these names (names missing from older pynvml are skipped)."""
    return tuple(getattr(pynvml, f"NVMLError_{n}") for n in names if hasattr(pynvml, f"NVMLError_{n}"))


_UNSUPPORTED = _classes("NotSupported", "FunctionNotFound", "NoPermission", "Deprecated",
                        "ArgumentVersionMismatch")
_GPU_LOST = _classes("GpuIsLost", "Unknown", "ResetRequired", "GpuNotFound")
_NVML_DOWN = _classes("Uninitialized", "DriverNotLoaded", "LibraryNotFound", "LibRmVersionMismatch")


def classify(exc: BaseException) -> ErrorKind:
    """Map an exception raised by the device layer to what the exporter should do about it."""
    if isinstance(exc, _UNSUPPORTED):
        return ErrorKind.UNSUPPORTED
    if isinstance(exc, _GPU_LOST):
        return ErrorKind.GPU_LOST
    if isinstance(exc, _NVML_DOWN):
        return ErrorKind.NVML_DOWN
    return ErrorKind.TRANSIENT


def error_name(exc: BaseException) -> str:
    """A short label for an error: ``NotSupported`` for ``NVMLError_NotSupported``."""
    name = type(exc).__name__
    if name.startswith("NVMLError_"):
        return name[len("NVMLError_"):]
    if isinstance(exc, pynvml.NVMLError):
        return f"Code{getattr(exc, 'value', 'Unknown')}"
    return name


class ErrorCounter:
    """Thread-safe counts of errors by (NVML function, error name)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, function: str, error: str) -> None:
        """Count one error."""
        with self._lock:
            self._counts[(function, error)] += 1

    def items(self) -> list[tuple[tuple[str, str], int]]:
        """A sorted copy of the counts."""
        with self._lock:
            return sorted(self._counts.items())


class OnceLog:
    """Logs a message the first time its key is seen, and stays quiet after that."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._logger = logger
        self._seen: set[Hashable] = set()
        self._lock = threading.Lock()

    def log(self, key: Hashable, level: int, msg: str, *args: object) -> bool:
        """Log ``msg`` if ``key`` is new; returns whether it was logged."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        self._logger.log(level, msg, *args, stacklevel=2)
        return True

    def forget(self, key: Hashable) -> None:
        """Let ``key`` be logged again (e.g. after a recovery)."""
        with self._lock:
            self._seen.discard(key)
