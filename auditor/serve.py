"""The app factory behind `redirect-auditor run`: the user's app, recorder wrapped.

Settings arrive in environment variables so that every uvicorn worker process
(spawned, not forked) builds the same wrapped app.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

from starlette.types import ASGIApp

from auditor.middleware import RedirectRecorder

SETTINGS_ENV = "REDIRECT_AUDITOR_RUN"


class AppImportError(Exception):
    """The APP_IMPORT string does not name an importable ASGI app."""


def import_app(target: str, *, factory: bool = False, app_dir: str = ".") -> ASGIApp:
    """Import ``module:attribute`` (calling it when ``factory``) with one-line errors."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise AppImportError(f"{target!r} is not of the form 'module:attribute'")
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppImportError(f"cannot import module {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppImportError(f"module {module_name!r} has no attribute {attr!r}") from None
    if factory:
        obj = obj()
    if not callable(obj):
        raise AppImportError(f"{target!r} is not an ASGI application (not callable)")
    return obj


def settings_env(**settings: Any) -> dict[str, str]:
    """Environment entries that carry ``run``'s settings to worker processes."""
    return {SETTINGS_ENV: json.dumps(settings)}


def create_app() -> ASGIApp:
    """uvicorn factory: read the settings, import the app, wrap it in the recorder."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    app = import_app(settings["app"], factory=settings["factory"], app_dir=settings["app_dir"])
    return RedirectRecorder(app, settings["db"], **settings["recorder"])
