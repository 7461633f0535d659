"""audit(): what it stores, what it never touches, and how it refuses bad input."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from auditor import audit
from auditor.analysis.config import ConfigError
from auditor.store.schema import SchemaError
from tests.traffic import scenario_db


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scenario_db(tmp_path_factory)


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def recorded_fields(db: Path) -> list[tuple[object, ...]]:
    """Every requests column the recorder wrote (all but linking's follow_up_of)."""
    with sqlite3.connect(db) as conn:
        columns = [r[1] for r in conn.execute("pragma table_info(requests)")]
        kept = ", ".join(c for c in columns if c != "follow_up_of")
        return conn.execute(f"select {kept} from requests order by id").fetchall()


def test_audit_stores_findings_and_a_run(db: Path) -> None:
    result = audit(db)
    assert result.rows_scanned == rows(db, "select count(*) from requests")[0][0]
    assert result.chains == rows(db, "select count(*) from chains")[0][0] > 0
    assert result.rows_dropped == 0
    stored = rows(db, "select rule, source, hits, audit_run_id from findings")
    assert len(stored) == len(result.findings)
    assert {r[3] for r in stored} == {result.run_id}
    [run] = rows(
        db,
        f"select errors, warnings, infos, rows_scanned from audit_runs where id = {result.run_id}",
    )
    assert run == (
        result.counts["error"],
        result.counts["warning"],
        result.counts["info"],
        result.rows_scanned,
    )


def test_rerun_replaces_findings_and_never_touches_recorded_fields(db: Path) -> None:
    before = recorded_fields(db)
    links = rows(db, "select id, follow_up_of from requests order by id")
    first = audit(db)
    second = audit(db)
    assert second.run_id > first.run_id
    assert [f.rule for f in second.findings] == [f.rule for f in first.findings]
    assert rows(db, "select distinct audit_run_id from findings") == [(second.run_id,)]
    assert recorded_fields(db) == before
    assert rows(db, "select id, follow_up_of from requests order by id") == links


def test_readers_never_see_a_half_replaced_findings_table(db: Path) -> None:
    expected = len(audit(db).findings)
    seen: set[tuple[int, int]] = set()
    stop = threading.Event()

    def read() -> None:
        conn = sqlite3.connect(db)
        while not stop.is_set():
            seen.add(
                conn.execute(
                    "select count(*), count(distinct audit_run_id) from findings"
                ).fetchone()
            )
        conn.close()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3):
            audit(db)
    finally:
        stop.set()
        reader.join()
    assert seen == {(expected, 1)}


def test_ignore_rules_and_paths(db: Path) -> None:
    result = audit(db, ignore_rules=["method-change-on-move"], ignore_paths=["/c/*"])
    assert not [f for f in result.findings if f.rule == "method-change-on-move"]
    assert not [f for f in result.findings if f.source.startswith("/c/")]
    assert [f for f in result.findings if f.rule == "post-redirect-get-302"]


def test_progress_callback_reports_every_step(db: Path) -> None:
    steps: list[tuple[str, int, int]] = []
    audit(db, progress=lambda step, done, total: steps.append((step, done, total)))
    assert steps[0][1] == 0 and steps[-1][1] == steps[-1][2]
    assert any(step == "rule method-change-on-move" for step, _, _ in steps)


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_bad_files_are_refused_untouched(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    empty_sqlite = tmp_path / "other.db"
    sqlite3.connect(empty_sqlite).execute("create table t (x)").connection.close()
    for path in (text, empty_sqlite):
        before = snapshot(path)
        with pytest.raises(SchemaError):
            audit(path)
        assert snapshot(path) == before
    with pytest.raises(SchemaError, match="no such file"):
        audit(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_newer_schema_is_refused_untouched(db: Path, tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    shutil.copy(db, newer)
    with sqlite3.connect(newer) as conn:
        conn.execute("update auditor_meta set value = '999' where key = 'schema_version'")
    conn.close()
    before = snapshot(newer)
    with pytest.raises(SchemaError, match="newer"):
        audit(newer)
    assert snapshot(newer) == before


def test_bad_option_values_are_refused_before_writing(db: Path) -> None:
    before = rows(db, "select count(*) from audit_runs")
    with pytest.raises(ConfigError, match="chain-threshold"):
        audit(db, chain_threshold=1)
    with pytest.raises(ConfigError, match="unknown rule"):
        audit(db, ignore_rules=["no-such-rule"])
    with pytest.raises(ConfigError, match="unknown key"):
        audit(db, no_such_option=1)
    assert rows(db, "select count(*) from audit_runs") == before
