"""RecorderOptions: the recorder's settings, validated once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from auditor.redaction import RedactionRules
from auditor.urls import TrustedProxies


@dataclass(frozen=True)
class RecorderOptions:
    """Recorder settings that the writer applies."""

    record: str
    sample_rate: float
    trusted_proxies: tuple[str, ...]
    store_client_ip: bool
    queue_size: int
    flush_interval: float
    follow_up_delay: float
    follow_up_window: float
    busy_timeout: float = 5.0  # seconds a write waits for another process's lock
    max_rows: int | None = None  # retention: keep at most this many newest requests
    max_age: float | None = None  # retention: delete requests older than this (seconds)
    writer: str = "thread"  # accepted for compatibility: rows are always written by a thread
    # Redaction beyond the defaults (auditor/redaction.py): parameter names whose values
    # are secrets, names whose values are kept, regexes for secret segments or values,
    # route templates whose every placeholder is a secret; token_routes: the app's own
    # templates with token-named parameters (found by the recorder at start-up).
    redact_params: tuple[str, ...] = ()
    allow_params: tuple[str, ...] = ()
    redact_patterns: tuple[str, ...] = ()
    redact_routes: tuple[str, ...] = ()
    token_routes: tuple[str, ...] = ()

    def redaction(self) -> RedactionRules:
        """The redaction rules these options add to the defaults."""
        return RedactionRules(
            params=self.redact_params,
            allow_params=self.allow_params,
            patterns=self.redact_patterns,
            routes=self.redact_routes,
            token_routes=self.token_routes,
        )

    @classmethod
    def build(cls, **kwargs: Any) -> RecorderOptions:
        """Validate and freeze options; raises ValueError at start-up, never per request."""
        if kwargs["record"] not in ("all", "redirects"):
            raise ValueError(f"record must be 'all' or 'redirects', not {kwargs['record']!r}")
        if kwargs.get("writer", "thread") not in ("process", "thread"):
            raise ValueError(f"writer must be 'process' or 'thread', not {kwargs['writer']!r}")
        if not 0.0 <= kwargs["sample_rate"] <= 1.0:
            raise ValueError("sample_rate must be between 0 and 1")
        if kwargs.get("busy_timeout", 0.0) < 0:
            raise ValueError("busy_timeout must not be negative")
        for name in ("max_rows", "max_age"):
            if kwargs.get(name) is not None and kwargs[name] <= 0:
                raise ValueError(f"{name} must be positive")
        proxies = kwargs["trusted_proxies"]
        kwargs["trusted_proxies"] = (proxies,) if isinstance(proxies, str) else tuple(proxies)
        TrustedProxies(kwargs["trusted_proxies"])  # validates the addresses
        for name in ("redact_params", "allow_params", "redact_patterns", "redact_routes"):
            values = kwargs.get(name, ())
            kwargs[name] = (values,) if isinstance(values, str) else tuple(values)
        kwargs["token_routes"] = tuple(kwargs.get("token_routes", ()))
        options = cls(**kwargs)
        options.redaction().validate()
        return options
