"""Which run is which: a run is identified by (campaign, run_id), never by run_id alone.

Two campaigns both have a run directory ``r01-vllm`` (run_id is the directory's name): only the
manifest's ``campaign`` tells them apart. Every count of runs, warning, table and summary.json
entry in the analysis goes through ``RunRef``:

- ``key``  = (campaign, run_id): identity (counting, de-duplicating);
- ``name`` = what the report prints: ``campaign/run_id`` when the runs of the report come from
  more than one campaign, else ``run_id`` (``run_refs`` decides, once per report, so that every
  table, warning and figure of one report names a run the same way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from core.rundir import Manifest


@dataclass(frozen=True)
class RunRef:
    campaign: str
    run_id: str
    qualified: bool = False      # name includes the campaign (the report spans campaigns)

    @property
    def key(self) -> tuple[str, str]:
        return (self.campaign, self.run_id)

    @property
    def name(self) -> str:
        return f"{self.campaign}/{self.run_id}" if self.qualified and self.campaign else self.run_id

    def __str__(self) -> str:
        return self.name


def run_ref(manifest: Manifest, run_dir: Path | str, qualified: bool = False) -> RunRef:
    """A run's reference from its manifest (run_id falls back to the directory's name)."""
    return RunRef(manifest.campaign or "", manifest.run_id or Path(run_dir).name, qualified)


def run_refs(manifests: Iterable[tuple[Path, Manifest]]) -> list[RunRef]:
    """References for the runs of one report: names carry the campaign when campaigns differ."""
    items = list(manifests)
    campaigns = {m.campaign or "" for _, m in items}
    qualified = len(campaigns) > 1
    return [run_ref(m, d, qualified) for d, m in items]
