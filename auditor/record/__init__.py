"""The recorder: runs inside the app's process.

``middleware`` (the hot path), ``options`` (``RecorderOptions``), ``rows`` (capture ->
``requests`` row), ``targets`` (record="redirects": recent redirect targets shared by
every process on one database), ``writer`` (queue -> journal batches -> SQLite), ``ledger``
(counts a killed worker's queue), ``registry`` (one writer per process and file) and
``serve`` (the app factory behind ``redirect-auditor run``).
"""
