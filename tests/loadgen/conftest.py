"""Fixtures for the load-generator tests (the helpers themselves are in tests/support)."""

from __future__ import annotations

from typing import Iterator

import pytest

from support import StubProcesses


@pytest.fixture
def stub() -> Iterator[StubProcesses]:
    """Start stub servers (CLI options as keywords); returns base URLs; stops them all after."""
    with StubProcesses() as start:
        yield start
