"""Which GPUs to export: ``--gpus 0,1`` or UUIDs, matched against what NVML reports.

NVML numbers GPUs in its own (PCI) order and ignores CUDA_VISIBLE_DEVICES, so an index here
is ``nvidia-smi``'s index. UUIDs are stable across reboots and re-initialisation.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from .reader import GpuIdentity


class SelectionError(ValueError):
    """A GPU selector matches no GPU; the message names the GPUs there are."""


def parse_gpu_selectors(text: str) -> list[str]:
    """Split ``"0,1"`` / ``"GPU-ab12...,1"`` into selectors; raise ValueError on a bad token."""
    selectors = [token.strip() for token in text.split(",") if token.strip()]
    if not selectors:
        raise ValueError("--gpus is empty: give indices (0,1) or UUIDs (GPU-...)")
    for token in selectors:
        if not (token.isdigit() or token.upper().startswith(("GPU-", "MIG-"))):
            raise ValueError(f"--gpus: {token!r} is neither an NVML index (0, 1, ...) "
                             "nor a UUID (GPU-...); see `nvidia-smi -L`")
    return selectors


def describe(available: Iterable[GpuIdentity]) -> str:
    """``0 GPU-aaa (NVIDIA H100), 1 GPU-bbb (...)`` or ``none``."""
    parts = [f"{g.index} {g.uuid}" + (f" ({g.name})" if g.name else "") for g in available]
    return ", ".join(parts) if parts else "none"


def _matches(selector: str, gpu: GpuIdentity) -> bool:
    if selector.isdigit():
        return int(selector) == gpu.index
    return selector.lower() == gpu.uuid.lower()


def resolve(selectors: Sequence[str], available: Sequence[GpuIdentity]
            ) -> tuple[list[GpuIdentity], list[str]]:
    """(selected GPUs in NVML order, selectors that matched nothing). No selectors: all GPUs."""
    if not selectors:
        return list(available), []
    chosen = [g for g in available if any(_matches(s, g) for s in selectors)]
    unmatched = [s for s in selectors if not any(_matches(s, g) for g in available)]
    return chosen, unmatched


def selection_error(unmatched: Sequence[str], available: Sequence[GpuIdentity]) -> SelectionError:
    """The error for selectors that match no GPU."""
    return SelectionError(
        f"--gpus {','.join(unmatched)}: no such GPU. NVML sees: {describe(available)}. "
        "Use NVML indices (as in `nvidia-smi -L`, which ignores CUDA_VISIBLE_DEVICES) or UUIDs.")
