"""The app factory behind `redirect-auditor run`: the user's app, recorder wrapped.

Settings arrive in environment variables so that every uvicorn worker process
(spawned, not forked) builds the same wrapped app. uvicorn serves ``create_app``
with the proxy-header, lifespan and factory settings the user gave ``run`` (else
uvicorn's own defaults), so its ``ProxyHeadersMiddleware`` sits outside the
recorder and rewrites the very scope the recorder records: the recorder trusts no
proxy of its own and sees the scheme and client uvicorn gave the app.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import sys
from typing import Any, cast

from starlette.types import ASGIApp
from uvicorn.middleware.asgi2 import ASGI2Middleware

from auditor.record.middleware import RedirectRecorder

SETTINGS_ENV = "REDIRECT_AUDITOR_RUN"
# uvicorn's test for an ASGI3 callable (asyncio's also sees functions marked as
# coroutine functions, e.g. by asgiref, before Python 3.12 could mark them itself).
_is_coroutine_function = (
    inspect.iscoroutinefunction if sys.version_info >= (3, 14) else asyncio.iscoroutinefunction
)


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


def load_app(target: str, *, factory: bool, app_dir: str = ".") -> ASGIApp:
    """The app as plain ``uvicorn TARGET [--factory]`` loads it, once per process.

    As uvicorn's ``Config.load``: the imported object is called with no arguments; a
    TypeError means it is the app itself (an error with ``--factory``), a result is
    the app (uvicorn warns when ``--factory`` was not given). An ASGI2 app (not a
    coroutine function, nor a class with ``__await__``) is adapted by uvicorn's own
    ``ASGI2Middleware``, since uvicorn now sees the recorder, an ASGI3 app.
    """
    obj: Any = import_app(target, app_dir=app_dir)
    try:
        app = obj()
    except TypeError as exc:
        if factory:
            raise AppImportError(f"calling the app factory {target!r} failed: {exc}") from exc
        app = obj
    else:
        if not factory:
            logging.getLogger("uvicorn.error").warning(
                "ASGI app factory detected. Using it, but please consider setting the "
                "--factory flag explicitly."
            )
    if inspect.isclass(app):
        asgi3 = hasattr(app, "__await__")
    elif inspect.isfunction(app):
        asgi3 = _is_coroutine_function(app)
    else:
        asgi3 = _is_coroutine_function(getattr(app, "__call__", None))  # noqa: B004 (uvicorn's)
    return app if asgi3 else cast(ASGIApp, ASGI2Middleware(app))


def create_app() -> ASGIApp:
    """uvicorn factory: read the settings, load the app, wrap it in the recorder."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    app = load_app(settings["app"], factory=settings["factory"], app_dir=settings["app_dir"])
    return RedirectRecorder(app, settings["db"], **settings["recorder"])
