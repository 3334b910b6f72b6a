"""The README documents what the code defines (one place for each fact, checked here)."""

from pathlib import Path

from core.config import LoadSettings, RequestSettings
from core.records import ERROR_CATEGORIES, FIELD_DEFINITIONS, RECORD_FIELDS
import dataclasses

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_record_field_is_documented_with_its_definition():
    for name in RECORD_FIELDS:
        assert f"| `{name}` | {FIELD_DEFINITIONS[name]} |" in README, name


def test_every_error_category_is_documented():
    for name, text in ERROR_CATEGORIES.items():
        assert f"| `{name}` | {text} |" in README, name


def test_every_setting_is_documented():
    for cls in (LoadSettings, RequestSettings):
        for f in dataclasses.fields(cls):
            assert f"\n{f.name} = " in README, f.name


def test_readme_opens_with_the_two_commands():
    head = README.split("```")[1]
    assert "make demo" in head and "make test" in head
