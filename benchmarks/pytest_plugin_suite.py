"""A public ASGI project's own test suite, with and without ``--redirect-audit``.

What a new user of the pytest plugin sees on a real suite (issue 17): the project's
sdist from PyPI (Starlette's ships its ``tests/``) is unpacked into a work folder, a
fresh venv there gets this checkout (editable) and the project's test dependencies,
and the suite runs, in interleaved rounds, three ways:

- ``without``: the plugin not loaded (``-p no:redirect_audit``), as if not installed;
- ``installed``: installed but not enabled;
- ``audited``: ``--redirect-audit=DB``.

It reports whether every test has the same outcome in all three (from ``--junitxml``),
the median wall time of each and the overhead, what was recorded (requests, bytes per
request), and every finding of the last audited run with its message and the test and
request of its example, for a person to judge each one.

Not a test and not run in CI: it downloads packages and takes a few minutes.

Usage: ``python benchmarks/pytest_plugin_suite.py [--project starlette] [--version V]
[--rounds 3] [--workdir DIR] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Project:
    """How to run one project's own suite from its sdist."""

    name: str
    # Test dependencies, ``{version}`` filled in; the project itself comes from here too.
    requirements: tuple[str, ...]
    pytest_args: tuple[str, ...] = ()


PROJECTS = {
    # Starlette's dev group (pyproject.toml) minus linters, type checkers and docs.
    "starlette": Project(
        "starlette",
        (
            "starlette[full]=={version}",
            "httpx2[zstd]",
            "trio",
            "blockbuster",
            "opentelemetry-sdk",
            "pytest",
        ),
    ),
}

CONFIGURATIONS = ("without", "installed", "audited")


@dataclass
class Run:
    configuration: str
    seconds: float
    cpu_seconds: float  # user + system of the whole process tree (writer process included)
    outcomes: dict[str, str]
    exit_code: int
    output: str = ""


@dataclass
class Report:
    project: str
    version: str
    tests: int = 0
    runs: list[Run] = field(default_factory=list)


def sh(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs)


def prepare(project: Project, version: str | None, workdir: Path) -> tuple[Path, Path, str]:
    """The venv's python, the unpacked sdist and its version."""
    venv = workdir / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        sh([sys.executable, "-m", "venv", str(venv)])
        sh([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    downloads = workdir / "sdist"
    downloads.mkdir(exist_ok=True)
    spec = project.name if version is None else f"{project.name}=={version}"
    download = [str(python), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
    sh([*download, "-d", str(downloads), spec])
    archives = sorted(downloads.glob(f"{project.name}-*.tar.gz"))
    if version is not None:
        archives = [a for a in archives if a.name == f"{project.name}-{version}.tar.gz"]
    archive = archives[-1]
    version = archive.name.removeprefix(f"{project.name}-").removesuffix(".tar.gz")
    source = workdir / archive.name.removesuffix(".tar.gz")
    if not source.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(workdir, filter="data")
    requirements = [r.format(version=version) for r in project.requirements]
    sh([str(python), "-m", "pip", "install", "-q", "-e", str(REPO), *requirements])
    return python, source, version


def outcomes(junit: Path) -> dict[str, str]:
    """Test id -> passed / failed / error / skipped, from a JUnit XML report."""
    found: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        outcome = "error" if "error" in kinds else next(iter(kinds), "passed")
        if outcome == "skipped" and found.get(test) in ("failure", "error"):
            continue
        if found.get(test) not in ("failure", "error"):  # a teardown error keeps the call's
            found[test] = outcome if outcome != "failure" else "failed"
    return found


def run_suite(
    python: Path, source: Path, project: Project, configuration: str, workdir: Path, n: int
) -> Run:
    junit = workdir / f"{configuration}-{n}.xml"
    args = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    if configuration == "without":
        args += ["-p", "no:redirect_audit"]
    elif configuration == "audited":
        args += [f"--redirect-audit={workdir / 'audit.db'}"]
    args += list(project.pytest_args)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        args, cwd=source, env=env, text=True, capture_output=True, timeout=3600, check=False
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(configuration, seconds, cpu, outcomes(junit), done.returncode, done.stdout)


def findings(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            """select f.severity, f.rule, f.method, f.source, f.status, f.target, f.hits,
                      f.message, r.client_ip as example_client, r.url as example_url,
                      r.location as example_location
               from findings f left join requests r on r.id = f.example_request_id
               order by f.severity_rank, f.rule, f.source"""
        ).fetchall()
        return [dict(row) for row in rows]
    finally:
        conn.close()


def recorded(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        requests, redirects, clients = conn.execute(
            """select count(*), sum(status between 300 and 399 and status != 304),
                      count(distinct client_ip) from requests"""
        ).fetchone()
    finally:
        conn.close()
    size = sum(Path(f"{db}{s}").stat().st_size for s in ("", "-wal") if Path(f"{db}{s}").exists())
    return {
        "requests": requests,
        "redirects": redirects,
        "tests_and_apps": clients,
        "bytes_per_request": round(size / requests) if requests else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", choices=sorted(PROJECTS), default="starlette")
    parser.add_argument("--version", help="the project's version (default: the latest sdist)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="kept between runs (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    options = parser.parse_args()
    project = PROJECTS[options.project]
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="plugin-suite-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {workdir}", flush=True)
    python, source, version = prepare(project, options.version, workdir)
    report = Report(project.name, version)
    print(f"{project.name} {version}: {source}", flush=True)
    for n in range(options.rounds):
        for configuration in CONFIGURATIONS:
            run = run_suite(python, source, project, configuration, workdir, n)
            report.runs.append(run)
            counts: dict[str, int] = {}
            for outcome in run.outcomes.values():
                counts[outcome] = counts.get(outcome, 0) + 1
            print(
                f"round {n + 1} {configuration:<9} {run.seconds:6.1f} s wall "
                f"{run.cpu_seconds:6.1f} s CPU  {counts}",
                flush=True,
            )

    by_config = {c: [r for r in report.runs if r.configuration == c] for c in CONFIGURATIONS}
    reference = by_config["without"][0].outcomes
    report.tests = len(reference)
    differing = sorted(
        {
            test
            for run in report.runs
            for test in set(reference) | set(run.outcomes)
            if run.outcomes.get(test) != reference.get(test)
        }
    )
    medians = {c: statistics.median(r.seconds for r in runs) for c, runs in by_config.items()}
    cpu = {c: statistics.median(r.cpu_seconds for r in runs) for c, runs in by_config.items()}
    print()
    print(f"{report.tests} tests; outcomes {dict(sorted(_count(reference).items()))} without us")
    if differing:
        print(f"DIFFERENT OUTCOMES in {len(differing)} tests:")
        for test in differing:
            print(
                f"  {test}: "
                + ", ".join(f"{r.configuration}={r.outcomes.get(test)}" for r in report.runs)
            )
    else:
        print(f"same outcome for every test in all {len(report.runs)} runs")
    for c in CONFIGURATIONS:
        spread = ", ".join(f"{r.seconds:.1f}" for r in by_config[c])
        overhead = (medians[c] / medians["without"] - 1) * 100
        cpu_overhead = (cpu[c] / cpu["without"] - 1) * 100
        print(
            f"{c:<9} wall median {medians[c]:.1f} s ({spread}) {overhead:+.1f} %; "
            f"CPU median {cpu[c]:.1f} s {cpu_overhead:+.1f} % vs without"
        )
    db = workdir / "audit.db"
    stats = recorded(db)
    print(f"recorded: {stats}")
    found = findings(db)
    print("\nthe plugin's summary (last audited run):")
    print(summary_section(by_config["audited"][-1].output))
    print("\nfindings in detail:")
    for f in found:
        print(f"- {f['severity'].upper()} {f['rule']}: {f['method']} {f['source']} {f['status']}")
        print(f"  {f['message']}")
        print(
            f"  example: {f['example_client']}: {f['method']} {f['example_url']} -> "
            f"{f['example_location']}"
        )
    if options.json:
        options.json.write_text(
            json.dumps(
                {
                    "project": project.name,
                    "version": version,
                    "tests": report.tests,
                    "differing_outcomes": differing,
                    "median_seconds": medians,
                    "median_cpu_seconds": cpu,
                    "runs": [
                        {
                            "configuration": r.configuration,
                            "seconds": r.seconds,
                            "cpu_seconds": r.cpu_seconds,
                            "exit": r.exit_code,
                        }
                        for r in report.runs
                    ],
                    "recorded": stats,
                    "findings": found,
                },
                indent=2,
            )
        )
    if options.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if differing else 0


def summary_section(output: str) -> str:
    """The plugin's section of pytest's terminal summary."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if " redirect audit " in line)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("explore:"))
    return "\n".join(lines[start : end + 1])


def _count(outcomes: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
