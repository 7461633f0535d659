"""A Starlette site with every kind of response the recorder must get right.

Used in-process (wrapped in ``RedirectRecorder``) and by ``redirect-auditor run
tests.apps.site:app`` in subprocesses.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]


async def redirect(request: Request) -> Response:
    """Redirect with the status in the path to ``?to=`` (default /landing/done)."""
    await request.body()
    to = request.query_params.get("to", "/landing/done")
    return RedirectResponse(to, status_code=request.path_params["code"])


async def landing(request: Request) -> Response:
    body = await request.body()
    return PlainTextResponse(f"{request.method} {len(body)}")


async def multi_location(request: Request) -> Response:
    response = Response(status_code=302)
    response.raw_headers += [
        (b"location", b"/landing/one"),
        (b"location", b"/landing/two?token=abc"),
    ]
    return response


async def cached_redirect(request: Request) -> Response:
    return RedirectResponse(
        "/landing/cached",
        status_code=301,
        headers={"cache-control": "max-age=3600", "expires": "Thu, 01 Jan 2099 00:00:00 GMT"},
    )


async def cached_ok(request: Request) -> Response:
    # Cache-Control is stored for redirects only.
    return PlainTextResponse("ok", headers={"cache-control": "max-age=60"})


async def absolute_redirect(request: Request) -> Response:
    return RedirectResponse("https://Example.COM:443/Next/%7euser?b=2#frag", status_code=308)


async def boom(request: Request) -> Response:
    raise RuntimeError("the app failed")


async def user(request: Request) -> Response:
    return PlainTextResponse(f"user {request.path_params['user_id']}")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(f"echo: {text}")


async def post(request: Request) -> Response:
    return PlainTextResponse(f"{request.path_params['uid']}/{request.path_params['post_id']}")


async def plain_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """A non-Starlette ASGI app mounted under a prefix (like static files)."""
    await PlainTextResponse("plain")(scope, receive, send)


async def anything(request: Request) -> Response:
    return PlainTextResponse("anything")


app = Starlette(
    routes=[
        Route("/redirect/{code:int}", redirect, methods=ALL_METHODS),
        Route("/landing/{name}", landing, methods=ALL_METHODS),
        Route("/multi", multi_location),
        Route("/cached-redirect", cached_redirect),
        Route("/cached-ok", cached_ok),
        Route("/absolute", absolute_redirect),
        Route("/boom", boom),
        Mount("/api/v1", routes=[Route("/users/{user_id:int}", user)]),
        Mount("/people/{uid}", routes=[Route("/posts/{post_id:int}", post)]),
        Mount("/plain", plain_asgi),
        WebSocketRoute("/ws", echo),
        Route("/{rest:path}", anything, methods=ALL_METHODS),
    ]
)
