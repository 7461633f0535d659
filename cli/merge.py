"""`redirect-auditor merge`: combine per-host traffic databases into one."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from auditor.store.merge import merge
from auditor.store.schema import SchemaError

from .common import console, fail


def merge_command(
    out: Annotated[
        Path,
        typer.Argument(
            metavar="OUT",
            help="Database to merge into: a new file, or one an earlier merge made.",
        ),
    ],
    shards: Annotated[
        list[Path], typer.Argument(metavar="SHARD...", help="Traffic databases to copy from.")
    ],
) -> None:
    """Combine the traffic databases of several hosts into one, for a cross-host audit.

    Running it again with the same shards adds nothing twice. Hops that crossed
    hosts link when every host used the same REDIRECT_AUDITOR_SECRET.

    Example: redirect-auditor merge all.db web1.db web2.db && redirect-auditor audit all.db
    """
    try:
        result = merge(out, list(shards))
    except (SchemaError, ValueError) as exc:
        fail(str(exc))
    except sqlite3.Error as exc:
        fail(f"merging into {out} failed ({exc})")
    for shard, added in result.added.items():
        console.print(f"{shard}: {added} new request(s)", highlight=False, soft_wrap=True)
    console.print(f"{out}: {result.total} request(s) in all", highlight=False, soft_wrap=True)
