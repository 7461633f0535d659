"""A worker killed with SIGKILL: what its queue held is counted by the next writer."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from auditor.record.ledger import QUEUED, SETTLED, WORDS, Ledger, ledger_path
from auditor.record.options import RecorderOptions
from auditor.record.rows import Capture
from auditor.record.writer import Writer
from tests.servers import ROOT, fetch_rows

KILLED_WITH = 37

WORKER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from auditor.record.options import RecorderOptions
    from auditor.record.rows import Capture
    from auditor.record.writer import Writer

    options = RecorderOptions.build(
        record="all", sample_rate=0.0, trusted_proxies=(), store_client_ip=False,
        queue_size=1000, flush_interval=3600, follow_up_delay=2.0, follow_up_window=30.0,
    )
    writer = Writer(Path(sys.argv[1]), options)
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    writer.submit(Capture(scope, 1.0, 1.1, 200, [], 0, True))
    writer.flush()  # one row written and settled
    for _ in range(int(sys.argv[2])):
        writer.submit(Capture(scope, 1.0, 1.1, 200, [], 0, True))
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _options() -> RecorderOptions:
    return RecorderOptions.build(
        record="all",
        sample_rate=0.0,
        trusted_proxies=(),
        store_client_ip=False,
        queue_size=1000,
        flush_interval=3600,
        follow_up_delay=2.0,
        follow_up_window=30.0,
    )


def test_a_killed_workers_queue_is_counted_as_dropped_by_the_next_writer(tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    killed = subprocess.run(
        [sys.executable, "-c", WORKER, str(db), str(KILLED_WITH)], cwd=ROOT, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL
    writer = Writer(db, _options())
    try:
        writer._reckon()
        writer.flush()
    finally:
        writer.close()
    stats = fetch_rows(db, "select rows_written, dropped_other from recorder_stats")
    assert sum(s["rows_written"] for s in stats) == 1
    assert sum(s["dropped_other"] for s in stats) == KILLED_WITH
    # Counted once: the dead worker's slot is free again.
    assert Ledger(db).reckon() == []


def test_a_clean_exit_frees_its_slot_and_leaves_nothing_to_count(tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    writer = Writer(db, _options())
    writer.close()
    ledger = Ledger(db)
    try:
        assert ledger.slot == 0 and ledger.reckon() == []
    finally:
        ledger.close(clean=True)
    assert ledger_path(db).stat().st_mode & 0o077 == 0


def test_a_capture_that_cannot_be_read_is_counted_never_raised_and_leaves_the_ledger_even(
    tmp_path: Path,
) -> None:
    db = tmp_path / "traffic.db"
    writer = Writer(db, _options())
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    try:
        writer.submit(Capture(scope, 1.0, 1.1, 200, [], 0, True))
        writer.submit(Capture(None, 1.0, 1.1, 200, [], 0, True))  # a bug's capture: no scope
        writer.flush()
        assert writer.dropped["other"] == 1 and writer.rows_written == 1
        ledger = writer._ledger
        assert ledger is not None
        base = ledger.slot * WORDS
        # Never queued, so not in the ledger's reckoning: queued == settled == 1.
        assert ledger._words[base + QUEUED] == ledger._words[base + SETTLED] == 1
    finally:
        writer.close()
    (stats,) = fetch_rows(db, "select rows_written, dropped_other from recorder_stats")
    assert (stats["rows_written"], stats["dropped_other"]) == (1, 1)
