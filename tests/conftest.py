"""Fixtures shared by the recorder tests (none are autouse)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor import RedirectRecorder
from tests.apps import site


@pytest.fixture
def make_recorder(tmp_path: Path) -> Iterator[Callable[..., RedirectRecorder]]:
    """Build RedirectRecorders on fresh database files; their writers close after the test."""
    made: list[RedirectRecorder] = []

    def make(app: Any = site.app, db_path: Path | None = None, **options: Any) -> RedirectRecorder:
        recorder = RedirectRecorder(app, db_path or tmp_path / f"traffic{len(made)}.db", **options)
        made.append(recorder)
        return recorder

    yield make
    for recorder in made:
        recorder.writer.close()
