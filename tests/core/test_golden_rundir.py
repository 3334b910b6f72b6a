"""The run directory is a contract: what this checkout writes matches the golden fixtures.

The fixtures (tests/core/golden/) were made from the committed code before core/rundir/ became a
package, by tests/core/rundir_golden.py (see there for the two scenarios, and for what is
masked: times, latencies, ids, hosts, pids, ports, paths, Python's and Locust's versions, counts).
Everything else must be identical: file names, CSV headers, column order and line endings,
records.csv and stages.csv of the deterministic scenario byte for byte, the manifest's keys at
every depth with their value types, the schema version, the stage rows, the metric names and
label names of metrics.csv. A change of format is a new SCHEMA_VERSION with a reader for the old
one, and new fixtures.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest

from rundir_golden import GOLDEN, normalize, produce, read_fixtures

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def produced(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("golden-run")
    return produce(ROOT, out)


@pytest.fixture(scope="module")
def written(produced) -> dict[str, str]:
    return normalize(produced, ROOT)


def _diff(want: str, got: str, name: str) -> str:
    return "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                        f"golden/{name}", f"written/{name}"))


def test_the_same_files_are_written(written):
    assert sorted(written) == sorted(read_fixtures(GOLDEN))


@pytest.mark.parametrize("name", sorted(read_fixtures(GOLDEN)))
def test_each_file_matches_its_golden_form(written, name):
    want = read_fixtures(GOLDEN)[name]
    got = written.get(name)
    assert got is not None, f"{name} was not written"
    assert got == want, _diff(want, got, name)


def test_the_masked_versions_are_the_packages(produced):
    """The suite's version (masked in the fixtures) comes from the package metadata."""
    from importlib import metadata

    from core.rundir import suite_version

    for path in sorted(produced.rglob("manifest.json")):
        versions = json.loads(path.read_text())["versions"]
        assert versions["suite"] == suite_version() != "unknown", path
        assert versions["locust"] == metadata.version("locust"), path   # not imported here:
        # Locust monkey-patches the process it is imported into


def test_the_fixtures_pin_the_schema_version():
    from core.rundir import SCHEMA_VERSION

    manifests = [t for n, t in read_fixtures(GOLDEN).items() if n.endswith("manifest.json")]
    assert manifests and all(f'"schema_version": {SCHEMA_VERSION},' in t for t in manifests)
