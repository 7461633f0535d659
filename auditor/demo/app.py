"""The demo's example app: a small shop website that gets redirects wrong on purpose.

Each planted mistake's docstring names the one problem of the catalogue
(docs/problems.md) that it plants, and the audit must report that problem once,
at the severity ``PLANTED`` gives. Routes that do the right thing say so and must
produce no finding. ``PLANTED`` and ``CORRECT_ROUTES`` at the bottom are the
documented result that ``redirect-auditor demo`` and ``tests/test_demo.py``
check. The traffic that exercises these routes is in ``traffic.py``.

The shop under ``/shop`` sits behind a TLS-terminating proxy and is served
without ``--proxy-headers``, so it believes every request arrived over http.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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


def sign_in_form(action: str = "") -> str:
    return (
        f'<form method="post" action="{action}"><input name="user">'
        '<input name="password" type="password"><button>Sign in</button></form>'
    )


# --- Method and body ----------------------------------------------------------------


async def login(request: Request) -> Response:
    """Mistake: the login form's POST is answered with 302 Found, then the account page.

    Post/redirect/get is the right pattern; only the code is old-fashioned (every
    client turns the POST into a GET, as intended): ``post-redirect-get-302`` (info).
    Right: 303 See Other.
    """
    if request.method == "GET":
        return page("Sign in", sign_in_form())
    await form_fields(request)
    return RedirectResponse("/account", status_code=302)


async def account(request: Request) -> Response:
    """Where a signed-in user lands."""
    return page("Your account")


async def members_login(request: Request) -> Response:
    """Mistake: a FastAPI-style login form answered with ``RedirectResponse(url)``, whose
    default status is 307 Temporary Redirect.

    307 tells every client to re-send the form, password included, to the members'
    home page, which takes only GET and answers 405: ``form-reposted-by-307`` (error:
    a login route). Right: ``RedirectResponse(url, status_code=303)``.
    """
    if request.method == "GET":
        return page("Members: sign in", sign_in_form())
    await form_fields(request)
    return RedirectResponse("/members/home")  # FastAPI's (Starlette's) default: 307


async def members_home(request: Request) -> Response:
    """The members' home page (GET only)."""
    return page("Welcome back")


async def subscribe_moved(request: Request) -> Response:
    """Mistake: an old form action answered with 301 to its new URL.

    Clients follow the POST with a GET, which the new POST-only endpoint answers
    405, and the e-mail address is lost: ``method-change-on-move`` (error). Right:
    308 keeps the POST and its body.
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

    requests keeps the PUT on a 301 but drops its body, so the new endpoint sees
    an empty PUT and answers 422: ``method-change-on-move`` (error). Right: 308.
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


async def feedback(request: Request) -> Response:
    """Mistake: the feedback form's 303 points at a route declared for POST only.

    303 rightly asks for a GET, and the target answers it 405: every client ends
    on an error page: ``redirect-target-fails`` (error). Right: let
    ``/feedback/received`` answer GET.
    """
    if request.method == "GET":
        return page("Feedback", '<form method="post"><textarea name="message"></textarea>')
    await form_fields(request)
    return RedirectResponse("/feedback/received", status_code=303)


async def feedback_received(request: Request) -> Response:
    """Copied from the form handler, with its ``methods=["POST"]``."""
    return page("Thanks for your feedback")


# --- Chains, loops and trailing slashes --------------------------------------------


async def old_blog_post(request: Request) -> Response:
    """Mistake, hop 1 of a 2-hop chain: the 2019 URL scheme moved (301) to
    ``/blog/{slug}``, which a later redesign moved again (301) to ``/posts/{slug}``:
    ``redirect-chain`` (warning). Right: one 301 straight to the final URL.
    """
    slug = request.path_params["slug"]
    return RedirectResponse(f"/blog/{slug}", status_code=301, headers=CACHE_A_DAY)


async def blog_post(request: Request) -> Response:
    """Hop 2 of the chain: the blog moved to /posts."""
    slug = request.path_params["slug"]
    return RedirectResponse(f"/posts/{slug}", status_code=301, headers=CACHE_A_DAY)


async def post(request: Request) -> Response:
    """The final page."""
    return page(f"Post {request.path_params['slug']}")


async def docs(request: Request) -> Response:
    """Mistake: links point at ``/docs`` but the route is ``/docs/``.

    Every visit costs a round trip through Starlette's automatic 307
    (``redirect_slashes``): ``slash-redirect`` (info).
    """
    return page("Documentation")


async def settings(request: Request) -> Response:
    """Mistake, half of a loop: settings were renamed to preferences (307) ...

    ... and preferences were later "moved back" to settings (307). Clients go
    round until they give up: ``redirect-loop`` (error).
    """
    return RedirectResponse("/account/preferences")


async def preferences(request: Request) -> Response:
    """The other half of the loop."""
    return RedirectResponse("/account/settings")


# --- Permanence and caching ---------------------------------------------------------


async def promo(request: Request) -> Response:
    """Mistake: the marketing URL is a 301 whose target changes with each campaign.

    Browsers cache a 301 (here for a day; without Cache-Control heuristically for
    as long as they like), so returning visitors land on last season's sale:
    ``permanent-target-changed`` (warning). Right: 307.
    """
    campaign = request.app.state.campaign
    return RedirectResponse(f"/sale/{campaign}", status_code=301, headers=CACHE_A_DAY)


async def sale(request: Request) -> Response:
    """A campaign page."""
    return page(f"The {request.path_params['campaign']} sale")


async def about_us(request: Request) -> Response:
    """Mistake: the about page moved for good with 301 and no Cache-Control, so each
    browser decides how long to remember it: ``permanent-without-cache-control``
    (info). Right: say so, e.g. ``Cache-Control: max-age=86400``.
    """
    return RedirectResponse("/about", status_code=301)


async def about(request: Request) -> Response:
    """The about page."""
    return page("About the shop")


async def home(request: Request) -> Response:
    """Mistake: the home page sends everyone to the dashboard with 302 Found, where 307
    says what is meant: ``legacy-302`` (info).

    It never changes, so after a week and 100 hits of real traffic the audit would
    add ``temporary-looks-permanent``; the demo's seconds of traffic cannot show that.
    """
    return RedirectResponse("/dashboard", status_code=302)


async def dashboard(request: Request) -> Response:
    """The dashboard."""
    return page("Dashboard")


# --- Location and target ------------------------------------------------------------


async def login_return(request: Request) -> Response:
    """Mistake: after sign-in, send the user to ``?next=`` without checking it.

    ``/login/return?next=https://evil.example/`` sends users off-site, whichever
    host the link names: ``open-redirect`` (error, CWE-601). Right: accept only
    local paths.
    """
    return RedirectResponse(request.query_params.get("next", "/account"))


async def shop_add_to_cart(request: Request) -> Response:
    """Mistake: behind a TLS-terminating proxy, without ``--proxy-headers``, the app
    builds its Location from ``request.url_for``, which says ``http://``.

    303 after the POST is right; the scheme is not: ``scheme-downgrade`` (error).
    """
    await form_fields(request)
    return RedirectResponse(request.url_for("cart"), status_code=303)


async def shop_cart(request: Request) -> Response:
    """The cart page (reached over plain http after the downgrade)."""
    return page("Your cart")


# --- Status codes around redirects ----------------------------------------------------


async def order(request: Request) -> Response:
    """Mistake: ``DELETE /api/v2/orders/{id}`` answers 200 with an empty body:
    ``delete-200-no-content`` (info). Right: 204 No Content."""
    if request.method == "DELETE":
        return Response(status_code=200)
    return JSONResponse({"id": request.path_params["order_id"], "status": "open"})


# --- Right on purpose: these must produce no finding ---------------------------------


async def contact(request: Request) -> Response:
    """Right: post/redirect/get with 303 See Other to a page that answers GET. Every
    client follows with a GET, as intended: no finding."""
    if request.method == "GET":
        return page("Contact us", '<form method="post"><textarea name="message"></textarea>')
    await form_fields(request)
    return RedirectResponse("/contact/thanks", status_code=303)


async def contact_thanks(request: Request) -> Response:
    """Where the 303 lands."""
    return page("Thank you")


async def orders_v1(request: Request) -> Response:
    """Right: the API moved from /v1 to /v2 with 308 Permanent Redirect and an explicit
    max-age. Every client keeps the method and the body: no finding."""
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
    Temporary Redirect, which keeps the PUT and its body: no finding."""
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
            Route("/members/login", members_login, methods=["GET", "POST"]),
            Route("/members/home", members_home),
            Route("/account", account),
            Route("/account/settings", settings),
            Route("/account/preferences", preferences),
            Route("/subscribe", subscribe_moved, methods=["POST"]),
            Route("/newsletter/subscribe", newsletter_subscribe, methods=["POST"]),
            Route("/api/profile", profile_moved, methods=["PUT"]),
            Route("/api/v2/profile", profile, methods=["GET", "PUT"]),
            Route("/feedback", feedback, methods=["GET", "POST"]),
            Route("/feedback/received", feedback_received, methods=["POST"]),
            Route("/blog/2019/{slug}", old_blog_post),
            Route("/blog/{slug}", blog_post),
            Route("/posts/{slug}", post),
            Route("/docs/", docs),
            Route("/promo", promo),
            Route("/sale/{campaign}", sale),
            Route("/about-us", about_us),
            Route("/about", about),
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


@dataclass(frozen=True)
class Planted:
    """One problem the app plants on purpose: the audit must report it once, here."""

    rule: str  # the problem id (docs/problems.md)
    severity: str
    method: str
    source: str  # the route template the finding names
    how: str


# The problems the demo must produce, one finding each (and no other finding).
PLANTED: tuple[Planted, ...] = (
    Planted(
        "method-change-on-move",
        "error",
        "POST",
        "/subscribe",
        "old form action 301 to a POST-only endpoint: the GET follow-ups get 405",
    ),
    Planted(
        "method-change-on-move",
        "error",
        "PUT",
        "/api/profile",
        "API moved to /api/v2 with 301: requests re-sends the PUT without its body, 422",
    ),
    Planted(
        "form-reposted-by-307",
        "error",
        "POST",
        "/members/login",
        "login form answered RedirectResponse's default 307: the password is re-posted",
    ),
    Planted(
        "redirect-target-fails",
        "error",
        "POST",
        "/feedback",
        "303 to a POST-only page: the GET it asks for gets 405",
    ),
    Planted(
        "redirect-loop",
        "error",
        "GET",
        "/account/settings",
        "/account/settings <-> /account/preferences",
    ),
    Planted(
        "open-redirect",
        "error",
        "GET",
        "/login/return",
        "?next= taken unchecked: one finding for every attacker URL",
    ),
    Planted(
        "scheme-downgrade",
        "error",
        "POST",
        "/shop/cart/items",
        "https POST behind the TLS proxy -> 303 http://.../shop/cart",
    ),
    Planted(
        "redirect-chain",
        "warning",
        "GET",
        "/blog/2019/{slug}",
        "/blog/2019/{slug} -301-> /blog/{slug} -301-> /posts/{slug}",
    ),
    Planted(
        "permanent-target-changed",
        "warning",
        "GET",
        "/promo",
        "301 to /sale/spring, then to /sale/summer",
    ),
    Planted(
        "post-redirect-get-302",
        "info",
        "POST",
        "/login",
        "login form answered 302 then GET /account: right pattern, say 303",
    ),
    Planted(
        "permanent-without-cache-control",
        "info",
        "GET",
        "/about-us",
        "301 to /about without Cache-Control",
    ),
    Planted("legacy-302", "info", "GET", "/", "302 to /dashboard where 307 is meant"),
    Planted("slash-redirect", "info", "GET", "/docs", "Starlette's 307 from /docs to /docs/"),
    Planted(
        "delete-200-no-content",
        "info",
        "DELETE",
        "/api/v2/orders/{order_id:int}",
        "DELETE answered 200 with an empty body",
    ),
)

# Routes that do the right thing and must produce no finding (as source or target).
CORRECT_ROUTES: dict[str, str] = {
    "/contact": "POST answered 303 See Other to a page that answers GET (post/redirect/get)",
    "/contact/thanks": "where the 303 lands",
    "/api/v1/orders": "API moved with 308 and an explicit max-age: method and body kept",
    "/api/v2/orders": "where the 308 lands",
    "/uploads/avatar": "PUT answered 307: method and body kept",
    "/storage/avatar": "where the 307 lands",
}
