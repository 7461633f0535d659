"""A fix in the app's own framework: the redirect call with a status, and which
framework middleware sends redirects by itself (so the fix is a setting, not code).

The framework is what the recorder noted (``recorder_stats.framework``); an unknown
one gets plain HTTP advice.
"""

from __future__ import annotations

_STATUS_CONSTANT = {
    301: "HTTP_301_MOVED_PERMANENTLY",
    302: "HTTP_302_FOUND",
    303: "HTTP_303_SEE_OTHER",
    307: "HTTP_307_TEMPORARY_REDIRECT",
    308: "HTTP_308_PERMANENT_REDIRECT",
}


def redirect_call(framework: str | None, status: int) -> str:
    """How this framework answers with ``status``, as code the developer can paste."""
    if framework == "fastapi":
        return f"`RedirectResponse(url, status_code=status.{_STATUS_CONSTANT[status]})`"
    if framework == "starlette":
        return f"`RedirectResponse(url, status_code={status})`"
    if framework == "django":
        return {
            301: "`redirect(to, permanent=True)`",
            302: "`redirect(to)`",
            303: "`HttpResponseRedirect(url, status=303)`",
            307: "`redirect(to, preserve_request=True)` (Django 5.2+)",
            308: "`redirect(to, permanent=True, preserve_request=True)` (Django 5.2+)",
        }[status]
    if framework == "litestar":
        return f"`Redirect(path=url, status_code={status})`"
    if framework == "quart":
        return f"`redirect(url, code={status})`"
    if framework == "datasette":
        return f"`Response.redirect(path, status={status})`"
    return f"a {status} response"


# framework -> (its redirect helper, the status it sends when none is given)
_DEFAULT_REDIRECT = {
    "fastapi": ("FastAPI's `RedirectResponse`", 307),
    "starlette": ("Starlette's `RedirectResponse`", 307),
    "django": ("Django's `redirect()`", 302),
    "litestar": ("Litestar's `Redirect`", 302),
    "quart": ("Quart's `redirect()`", 302),
    "datasette": ("Datasette's `Response.redirect`", 302),
}


def default_remark(framework: str | None, status: int) -> str:
    """`` (Litestar's `Redirect` defaults to 302)`` when the framework's redirect helper
    sends ``status`` unless told otherwise (likely how this redirect came about), else ''."""
    helper, default = _DEFAULT_REDIRECT.get(framework or "", ("", 0))
    return f" ({helper} defaults to {default})" if default == status else ""


def slash_middleware(framework: str | None, status: int, adds_slash: bool) -> str | None:
    """The framework feature that sends trailing-slash redirects by itself, when this
    redirect looks like its work; None when the app's own code sent it."""
    if framework in ("fastapi", "starlette") and status == 307:
        return (
            "Starlette's router (`redirect_slashes=True`, 307) sent it: link to the canonical "
            "URL, or register the route under both spellings / pass `redirect_slashes=False` "
            "to the router"
        )
    if framework == "django" and status == 301 and adds_slash:
        return (
            "Django's `CommonMiddleware` (`APPEND_SLASH = True`, 301) sent it: link and submit "
            "to the URL with the slash, or set `APPEND_SLASH = False` and route both spellings"
        )
    if framework == "quart" and status in (301, 308) and adds_slash:
        return (
            "the router's `strict_slashes` (a route defined with a trailing slash) sent it: "
            "link to the URL with the slash, or define the route with `strict_slashes=False`"
        )
    return None
