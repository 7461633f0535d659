"""The recorder: runs inside the app's process.

``middleware`` (the hot path), ``options`` (``RecorderOptions``), ``rows`` (capture ->
``requests`` row), ``targets`` (record="redirects": recent redirect targets shared by
every process on one database), ``writer`` (queue -> SQLite), ``registry`` (one writer
per process and file); the writer process (``process_writer``, ``writer_process``,
``frames``) and ``serve`` (the app factory behind ``redirect-auditor run``).
"""
