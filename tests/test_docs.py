"""The docs say what the code defines (one place for each fact, checked here).

The README is the short read; the reference lives in docs/, one page per topic.
"""

import dataclasses
import re
from pathlib import Path

from analysis.definitions import sync_docs
from core.config import LoadSettings, RequestSettings
from core.records import ERROR_CATEGORIES, FIELD_DEFINITIONS, RECORD_FIELDS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARCHITECTURE_HEADING = "## Architecture"
ARCHITECTURE_MAX_LINES = 120


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def table_rows(text: str, header: str) -> list[str]:
    """The body rows of the Markdown table whose header line is `header`."""
    lines = text.split("\n")
    start = lines.index(header) + 2   # skip the header and the | --- | line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_every_record_field_is_documented_with_its_definition():
    text = page("run-directory.md")
    for name in RECORD_FIELDS:
        assert f"| `{name}` | {FIELD_DEFINITIONS[name]} |" in text, name
    assert len(table_rows(text, "| field | definition |")) == len(RECORD_FIELDS), \
        "a field in docs/run-directory.md is not in core.records: run python -m core.records"


def test_every_error_category_is_documented():
    text = page("run-directory.md")
    for name, meaning in ERROR_CATEGORIES.items():
        assert f"| `{name}` | {meaning} |" in text, name
    assert len(table_rows(text, "| category | meaning |")) == len(ERROR_CATEGORIES), \
        "a category in docs/run-directory.md is not in core.records: run python -m core.records"


def test_every_setting_is_documented():
    text = page("configuration.md")
    for cls in (LoadSettings, RequestSettings):
        for f in dataclasses.fields(cls):
            assert f"\n{f.name} = " in text, f.name


def test_generated_blocks_are_current(tmp_path):
    text = page("report.md")
    for name in ("warnings", "definitions"):
        assert f"<!-- generated:{name}:begin -->" in text, name
        assert f"<!-- generated:{name}:end -->" in text, name
    copy = tmp_path / "report.md"
    copy.write_text(text, encoding="utf-8")
    assert not sync_docs(copy), "run: python -m analysis.definitions docs/report.md"


def test_readme_opens_with_the_two_commands():
    head = README.split("```")[1]
    assert "make demo" in head and "make test" in head


def _links(text: str) -> list[str]:
    """Targets of Markdown links and images, outside code blocks and code spans."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = re.sub(r"`[^`]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.split("#")[0]).resolve() for t in _links(README) if _relative(t)}
    pages = sorted(DOCS.glob("*.md"))
    assert pages
    for path in pages:
        assert path.resolve() in linked, f"README.md does not link {path.relative_to(ROOT)}"


def test_every_relative_link_points_at_a_file():
    for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target in _links(path.read_text(encoding="utf-8")):
            if not _relative(target):
                continue
            file = (path.parent / target.split("#")[0]).resolve()
            assert file.exists(), f"{path.relative_to(ROOT)}: {target} does not exist"


def test_readme_architecture_section_is_short():
    lines = README.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith(ARCHITECTURE_HEADING)]
    assert len(starts) == 1, f"one {ARCHITECTURE_HEADING!r} heading expected in README.md"
    start = starts[0]
    end, fence = len(lines), False
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("```"):
            fence = not fence
        elif not fence and re.match(r"^#{1,2} ", lines[i]):
            end = i
            break
    length = end - start
    assert length < ARCHITECTURE_MAX_LINES, \
        f"the README's architecture section is {length} lines (< {ARCHITECTURE_MAX_LINES})"
