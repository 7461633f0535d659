"""The demo's example app: a small shop website that gets redirects wrong on purpose.

Each route's docstring says which mistake (or which right thing) it shows and
which rule id the audit should (or must not) report for it. ``EXPECTED_RULES``
and ``CORRECT_ROUTES`` at the bottom are the documented result that
``tests/test_demo.py`` checks. The traffic that exercises these routes is in
``demo_traffic.py``.

The shop under ``/shop`` sits behind a TLS-terminating proxy and is served
without ``--proxy-headers``, so it believes every request arrived over http.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

# Permanent redirects that are right say how long clients may cache them.
CACHE_A_DAY = {"Cache-Control": "max-age=86400"}
CAMPAIGNS = ("spring", "summer")


def page(title: str, body: str = "", status_code: int = 200) -> HTMLResponse:
    """A minimal HTML page."""
    return HTMLResponse(
        f"<!doctype html><title>{title}</title><h1>{title}</h1>{body}", status_code=status_code
    )


async def form_fields(request: Request) -> dict[str, str]:
    """An urlencoded form body, without needing python-multipart."""
    body = (await request.body()).decode("utf-8", "replace")
    return {name: values[0] for name, values in parse_qs(body).items()}


# --- Method semantics ---------------------------------------------------------------


async def login(request: Request) -> Response:
    """Mistake: the login form's POST is answered with 302 Found.

    Every client turns the POST into a GET (that is what 302 invites): rules
    ``ambiguous-method-redirect``, ``method-changed`` and ``legacy-302``. Right: 303.
    """
    if request.method == "GET":
        return page("Sign in", '<form method="post"><input name="user"><button>Go</button></form>')
    await form_fields(request)
    return RedirectResponse("/account", status_code=302)


async def account(request: Request) -> Response:
    """Where a signed-in user lands."""
    return page("Your account")


async def subscribe_moved(request: Request) -> Response:
    """Mistake: an old form action answered with 301 to its new URL.

    Clients follow the POST with a GET, which the new endpoint answers 405:
    ``ambiguous-method-redirect``, ``method-changed``, ``method-change-broke-request``,
    ``redirect-to-error``. Right: 308 keeps the POST and its body.
    """
    return RedirectResponse("/newsletter/subscribe", status_code=301, headers=CACHE_A_DAY)


async def newsletter_subscribe(request: Request) -> Response:
    """The newsletter endpoint: POST only, as an API should be."""
    fields = await form_fields(request)
    if "email" not in fields:
        return page("Missing email", status_code=422)
    return page("Subscribed")


async def profile_moved(request: Request) -> Response:
    """Mistake: a PUT endpoint moved to /api/v2 with 301 instead of 308.

    requests keeps the PUT on a 301 but drops its body, so the new endpoint
    sees an empty PUT and answers 422: ``ambiguous-method-redirect``,
    ``body-dropped``, ``redirect-to-error``.
    """
    return RedirectResponse("/api/v2/profile", status_code=301, headers=CACHE_A_DAY)


async def profile(request: Request) -> Response:
    """The profile API: a PUT needs a JSON body."""
    if request.method == "PUT":
        body = await request.body()
        if not body:
            return JSONResponse({"error": "empty body"}, status_code=422)
        return JSONResponse(json.loads(body))
    return JSONResponse({"name": "Ada"})


# --- Chains, loops and trailing slashes --------------------------------------------


async def old_blog_post(request: Request) -> Response:
    """Mistake, hop 1 of a 3-hop chain: the 2019 URL scheme moved (301) ...

    ... to ``/blog/{slug}``, which a later redesign sends (302) to
    ``/posts/{slug}``, which the router sends (307) to ``/posts/{slug}/``:
    ``redirect-chain``, ``mixed-permanence-chain``, ``slash-redirect``, ``legacy-302``.
    Right: one 301 straight to the final URL.
    """
    slug = request.path_params["slug"]
    return RedirectResponse(f"/blog/{slug}", status_code=301, headers=CACHE_A_DAY)


async def blog_post(request: Request) -> Response:
    """Hop 2 of the chain: the blog moved to /posts, "temporarily" (302)."""
    return RedirectResponse(f"/posts/{request.path_params['slug']}", status_code=302)


async def post(request: Request) -> Response:
    """The final page. Its route ends in a slash, so ``/posts/{slug}`` is redirected
    (307) by Starlette's ``redirect_slashes``: hop 3, ``slash-redirect``."""
    return page(f"Post {request.path_params['slug']}")


async def docs(request: Request) -> Response:
    """Mistake: links point at ``/docs`` but the route is ``/docs/``.

    Every visit costs a round trip through Starlette's automatic 307: ``slash-redirect``.
    """
    return page("Documentation")


async def settings(request: Request) -> Response:
    """Mistake, half of a loop: settings were renamed to preferences (302) ...

    ... and preferences were later "moved back" to settings (302). Clients go
    round until they give up: ``redirect-loop`` (and ``legacy-302``).
    """
    return RedirectResponse("/account/preferences", status_code=302)


async def preferences(request: Request) -> Response:
    """The other half of the loop."""
    return RedirectResponse("/account/settings", status_code=302)


# --- Permanence and caching ---------------------------------------------------------


async def promo(request: Request) -> Response:
    """Mistake: the marketing URL is a 301 whose target changes with each campaign.

    Browsers cache a 301 (heuristically forever, since it has no Cache-Control),
    so returning visitors keep landing on last season's sale:
    ``permanent-target-changed``, ``permanent-without-cache-control``. Right: 302/307.
    """
    campaign = request.app.state.campaign
    return RedirectResponse(f"/sale/{campaign}", status_code=301)


async def sale(request: Request) -> Response:
    """A campaign page."""
    return page(f"The {request.path_params['campaign']} sale")


async def home(request: Request) -> Response:
    """Mistake: the home page has sent everyone to the dashboard with a "temporary"
    302 since launch: ``temporary-looks-permanent``, ``legacy-302``. Right: 301/308.
    """
    return RedirectResponse("/dashboard", status_code=302)


async def dashboard(request: Request) -> Response:
    """The dashboard."""
    return page("Dashboard")


# --- Location and target ------------------------------------------------------------


async def login_return(request: Request) -> Response:
    """Mistake: after sign-in, send the user to ``?next=`` without checking it.

    ``/login/return?next=https://evil.example/`` sends users off-site:
    ``open-redirect`` (CWE-601), and ``legacy-302``. Right: accept only local paths.
    """
    return RedirectResponse(request.query_params.get("next", "/account"), status_code=302)


async def shop_add_to_cart(request: Request) -> Response:
    """Mistake: behind a TLS-terminating proxy, without ``--proxy-headers``, the app
    builds its Location from ``request.url_for``, which says ``http://``.

    303 after the POST is right; the scheme is not: ``scheme-downgrade``.
    """
    await form_fields(request)
    return RedirectResponse(request.url_for("cart"), status_code=303)


async def shop_cart(request: Request) -> Response:
    """The cart page (reached over plain http after the downgrade)."""
    return page("Your cart")


# --- Status codes around redirects ----------------------------------------------------


async def order(request: Request) -> Response:
    """Mistake: ``DELETE /api/v2/orders/{id}`` answers 200 with an empty body:
    ``delete-200-no-content``. Right: 204 No Content."""
    if request.method == "DELETE":
        return Response(status_code=200)
    return JSONResponse({"id": request.path_params["order_id"], "status": "open"})


# --- Right on purpose: these must produce no finding ---------------------------------


async def contact(request: Request) -> Response:
    """Right: post/redirect/get with 303 See Other. Every client follows with a GET,
    as intended. Must not trigger ``method-changed`` or ``ambiguous-method-redirect``."""
    if request.method == "GET":
        return page("Contact us", '<form method="post"><textarea name="message"></textarea>')
    await form_fields(request)
    return RedirectResponse("/contact/thanks", status_code=303)


async def contact_thanks(request: Request) -> Response:
    """Where the 303 lands."""
    return page("Thank you")


async def orders_v1(request: Request) -> Response:
    """Right: the API moved from /v1 to /v2 with 308 Permanent Redirect and an explicit
    max-age. Every client keeps the method and the body. Must not trigger
    ``method-changed``, ``body-dropped`` or ``permanent-without-cache-control``."""
    return RedirectResponse("/api/v2/orders", status_code=308, headers=CACHE_A_DAY)


async def orders_v2(request: Request) -> Response:
    """The v2 orders API: list (GET) and create (POST with a JSON body, 201)."""
    if request.method == "POST":
        body = await request.body()
        if not body:
            return JSONResponse({"error": "empty body"}, status_code=422)
        return JSONResponse({"id": 7, **json.loads(body)}, status_code=201)
    return JSONResponse([{"id": 7, "status": "open"}])


async def avatar_upload(request: Request) -> Response:
    """Right: during the storage migration, avatar uploads are sent on with 307
    Temporary Redirect, which keeps the PUT and its body. Must not trigger
    ``method-not-preserved``, ``body-dropped`` or ``legacy-302``."""
    return RedirectResponse("/storage/avatar", status_code=307)


async def storage_avatar(request: Request) -> Response:
    """The storage service: stores a non-empty upload."""
    body = await request.body()
    if not body:
        return JSONResponse({"error": "empty upload"}, status_code=422)
    return JSONResponse({"stored": len(body)}, status_code=201)


def build_app() -> Starlette:
    """A fresh demo app; ``app.state.campaign`` is what ``/promo`` points at."""
    shop = Starlette(
        routes=[
            Route("/cart", shop_cart, name="cart"),
            Route("/cart/items", shop_add_to_cart, methods=["POST"]),
        ]
    )
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/dashboard", dashboard),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/login/return", login_return),
            Route("/account", account),
            Route("/account/settings", settings),
            Route("/account/preferences", preferences),
            Route("/subscribe", subscribe_moved, methods=["POST"]),
            Route("/newsletter/subscribe", newsletter_subscribe, methods=["POST"]),
            Route("/api/profile", profile_moved, methods=["PUT"]),
            Route("/api/v2/profile", profile, methods=["GET", "PUT"]),
            Route("/blog/2019/{slug}", old_blog_post),
            Route("/blog/{slug}", blog_post),
            Route("/posts/{slug}/", post),
            Route("/docs/", docs),
            Route("/promo", promo),
            Route("/sale/{campaign}", sale),
            Route("/contact", contact, methods=["GET", "POST"]),
            Route("/contact/thanks", contact_thanks),
            Route("/api/v1/orders", orders_v1, methods=["GET", "POST"]),
            Route("/api/v2/orders", orders_v2, methods=["GET", "POST"]),
            Route("/api/v2/orders/{order_id:int}", order, methods=["GET", "DELETE"]),
            Route("/uploads/avatar", avatar_upload, methods=["PUT"]),
            Route("/storage/avatar", storage_avatar, methods=["PUT"]),
            Mount("/shop", app=shop),
        ]
    )
    app.state.campaign = CAMPAIGNS[0]
    return app


def start_campaign(app: Starlette, campaign: str) -> None:
    """Point ``/promo`` at another sale (the demo's phase 2)."""
    if campaign not in CAMPAIGNS:
        raise ValueError(f"unknown campaign {campaign!r}")
    app.state.campaign = campaign


# The rule ids the demo must produce (each is caused by the routes named).
EXPECTED_RULES: dict[str, str] = {
    "ambiguous-method-redirect": "POST /login (302), POST /subscribe and PUT /api/profile (301)",
    "method-changed": "POST /login and POST /subscribe followed with a GET",
    "method-change-broke-request": "POST /subscribe -> GET /newsletter/subscribe -> 405",
    "body-dropped": "PUT /api/profile -301-> the requests-like client's bodiless PUT",
    "redirect-to-error": "chains from /subscribe and /api/profile that end in 4xx",
    "slash-redirect": "/docs -> /docs/ and /posts/{slug} -> /posts/{slug}/",
    "redirect-chain": "/blog/2019/{slug} -> /blog/{slug} -> /posts/{slug} -> /posts/{slug}/",
    "mixed-permanence-chain": "the blog chain mixes 301, 302 and 307",
    "redirect-loop": "/account/settings <-> /account/preferences",
    "permanent-target-changed": "/promo: 301 to /sale/spring, then to /sale/summer",
    "permanent-without-cache-control": "/promo's 301 has no Cache-Control",
    "temporary-looks-permanent": "/ -> 302 /dashboard, unchanged and hit often",
    "legacy-302": "the 302s of /login, /, /blog/{slug}, /account/*, /login/return",
    "scheme-downgrade": "https POST /shop/cart/items -> 303 http://.../shop/cart",
    "open-redirect": "/login/return?next=https://evil.example/...",
    "delete-200-no-content": "DELETE /api/v2/orders/{order_id} -> 200, empty",
}

# Routes that do the right thing and must produce no finding (as source or target).
CORRECT_ROUTES: dict[str, str] = {
    "/contact": "POST answered 303 See Other (post/redirect/get)",
    "/contact/thanks": "where the 303 lands",
    "/api/v1/orders": "API moved with 308 and an explicit max-age: method and body kept",
    "/api/v2/orders": "where the 308 lands",
    "/uploads/avatar": "PUT answered 307: method and body kept",
    "/storage/avatar": "where the 307 lands",
}
