"""Small ASGI apps for the recorder tests, importable by `redirect-auditor run` subprocesses."""
