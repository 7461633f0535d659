"""A Quart app whose redirects are Quart's ``redirect()`` (default code 302), one of them
an open redirect that sends the client wherever ``?next=`` says."""

from __future__ import annotations

from quart import Quart, redirect, request, url_for
from werkzeug.wrappers import Response

app = Quart(__name__)


@app.post("/subscribe")
async def subscribe() -> Response:
    await request.get_data()
    return redirect(url_for("subscribed"))  # default code: 302


@app.get("/subscribed")
async def subscribed() -> str:
    return "subscribed"


@app.get("/go")
async def go() -> Response:
    return redirect(request.args["next"])  # an open redirect


@app.get("/library/")
async def library() -> str:
    return "library"
