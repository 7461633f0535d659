"""record="redirects": the table of recent redirect targets every process on a database shares."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from auditor.record.targets import (
    PATHS,
    SIZE,
    SLOTS,
    RecentTargets,
    location_path,
    targets_path,
)

SECRET = b"k" * 32


def test_a_target_noted_by_one_process_is_expected_by_another(tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    worker_a = RecentTargets(db, SECRET, window=30)
    worker_b = RecentTargets(db, SECRET, window=30)  # its own mapping of the same file
    worker_a.note("198.51.100.1", b"/landing/thanks", 1000.0)
    assert worker_b.expected("198.51.100.1", b"/landing/thanks", 1001.0)
    assert not worker_b.expected("198.51.100.2", b"/landing/thanks", 1001.0)  # other client
    assert not worker_b.expected("198.51.100.1", b"/landing/other", 1001.0)
    assert not worker_b.expected("198.51.100.1", b"/landing/thanks", 1000.0 + 60)  # too late


def test_the_table_holds_no_path_or_address_and_is_private(tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    RecentTargets(db, SECRET, window=30).note("198.51.100.1", b"/reset/s3cr3t-token", 1000.0)
    data = targets_path(db).read_bytes()
    assert b"s3cr3t" not in data and b"198.51.100.1" not in data
    assert stat.S_IMODE(targets_path(db).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("location", "request_path", "expected"),
    [
        (b"/landing/thanks?x=1", "/redirect/303", "/landing/thanks"),
        (b"https://example.com/a%20b", "/old", "/a b"),
        (b"next", "/dir/old", "/dir/next"),
        (b"../up/./here", "/a/b/c", "/a/up/here"),
        (b"?page=2", "/list", "/list"),
        (b"//cdn.example.com", "/x", "/"),
    ],
)
def test_location_path_is_the_path_the_follow_up_will_request(
    location: bytes, request_path: str, expected: str
) -> None:
    assert location_path(location, request_path) == expected


def test_the_newest_redirect_any_process_noted_tells_when_no_lookup_is_needed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "traffic.db"
    worker_a = RecentTargets(db, SECRET, window=30)
    worker_b = RecentTargets(db, SECRET, window=30)
    assert not worker_b.active(1000.0)  # nothing noted yet: no request can be a follow-up
    worker_a.note("198.51.100.1", b"/landing/thanks", 1000.0)
    assert worker_b.active(1001.0) and worker_b.active(1000.0 + 30)
    assert not worker_b.active(1000.0 + 60)  # every target noted has expired
    worker_a.note("198.51.100.1", b"/x", 990.0)  # a late note never moves it back
    assert worker_b.newest[0] == 1000


@pytest.mark.parametrize("old_size", [8 * SLOTS, PATHS])
def test_a_table_of_an_older_size_grows_and_keeps_its_targets(
    tmp_path: Path, old_size: int
) -> None:
    # Older releases noted targets without path marks (and before them, without the
    # newest-redirect word): their targets are still found for a window after the growth.
    db = tmp_path / "traffic.db"
    now = time.time()
    RecentTargets(db, SECRET, window=30).note("198.51.100.1", b"/landing/thanks", now)
    with targets_path(db).open("r+b") as table:
        table.truncate(old_size)
    worker = RecentTargets(db, SECRET, window=30)
    assert targets_path(db).stat().st_size == SIZE
    assert worker.expected("198.51.100.1", b"/landing/thanks", now + 1)
    assert not worker.expected("198.51.100.1", b"/landing/other", now + 1)


@pytest.mark.parametrize("window", [1, 30, 600, 5000])
def test_a_target_is_found_throughout_its_window_whatever_the_clock_reads(
    tmp_path: Path, window: int
) -> None:
    # The path marks count 16-second steps modulo 255: at no start time, window or
    # moment within the window may they hide a target the slots hold.
    worker = RecentTargets(tmp_path / "traffic.db", SECRET, window=window)
    for start in (1000.0, 1015.9, 1016.0, 4079.5, 4080.0, 1_796_000_000.25):
        worker.note("198.51.100.1", b"/next", start)
        for late in (x for x in (0.0, 0.5, 15.99, 16.0, window / 2, window) if x <= window):
            assert worker.expected("198.51.100.1", b"/next", start + late), (start, late)
            scope = {"client": ("198.51.100.1", 1), "raw_path": b"/next"}
            assert worker.follows(scope, None, start + late), (start, late)
        assert not worker.expected("198.51.100.1", b"/next", start + window + 17)


def test_follows_reads_the_client_and_path_from_the_scope(tmp_path: Path) -> None:
    worker = RecentTargets(tmp_path / "traffic.db", SECRET, window=30)
    worker.note("198.51.100.1", "/a b/é".encode(), 1000.0)
    scope = {"client": ("198.51.100.1", 5000), "path": "/a b/é", "raw_path": b"/a%20b/%C3%A9"}
    assert worker.follows(scope, None, 1001.0)
    assert not worker.follows({**scope, "client": ("198.51.100.2", 5000)}, None, 1001.0)
    worker.note("198.51.100.1", b"/plain", 1000.0)
    assert worker.follows({"client": ("198.51.100.1", 1), "raw_path": b"/plain"}, None, 1001.0)


def test_a_path_no_redirect_led_to_is_answered_without_the_client(tmp_path: Path) -> None:
    # The per-request cost while redirects are being answered: one path mark read.
    class Unread:
        def __getitem__(self, index: int) -> str:
            raise AssertionError("the client was read for a path that is no target")

    worker = RecentTargets(tmp_path / "traffic.db", SECRET, window=30)
    now = time.time()
    worker.note("198.51.100.1", b"/next", now)
    assert not worker.follows({"client": Unread(), "raw_path": b"/other"}, None, now + 1)
    assert not worker.follows({"client": Unread(), "raw_path": b"/next"}, None, now + 90)
    assert worker.follows({"client": ("198.51.100.1", 1), "raw_path": b"/next"}, None, now + 1)
