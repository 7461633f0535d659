"""A FastAPI app whose redirects all come from FastAPI/Starlette themselves:
``RedirectResponse`` with its default status (307) or an explicit one, and the
router's ``redirect_slashes`` (on by default)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel


class Item(BaseModel):
    name: str


def build_app() -> FastAPI:
    """A fresh app (each recording adds its own RedirectRecorder with add_middleware)."""
    app = FastAPI()

    # --- form POST answered with RedirectResponse's default (307) ---------------------------

    @app.post("/feedback")
    async def feedback(request: Request) -> RedirectResponse:
        await request.body()
        return RedirectResponse("/welcome")  # default status_code: 307

    @app.api_route("/welcome", methods=["GET", "POST"])
    async def welcome(request: Request) -> HTMLResponse:
        return HTMLResponse(f"<p>welcome ({request.method})</p>")

    # error variant 1: credentials re-posted (a login route)
    @app.post("/login")
    async def login(request: Request) -> RedirectResponse:
        await request.body()
        return RedirectResponse("/home")

    @app.api_route("/home", methods=["GET", "POST"])
    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse("<p>home</p>")

    # error variant 2: the re-posted form fails (the target answers 405 to POST)
    @app.post("/subscribe")
    async def subscribe(request: Request) -> RedirectResponse:
        await request.body()
        return RedirectResponse("/subscribed")

    @app.get("/subscribed")
    async def subscribed() -> HTMLResponse:
        return HTMLResponse("<p>subscribed</p>")

    # near miss: the same form flow done with 303
    @app.post("/contact")
    async def contact(request: Request) -> RedirectResponse:
        await request.body()
        return RedirectResponse("/contact-sent", status_code=303)

    @app.api_route("/contact-sent", methods=["GET", "POST"])
    async def contact_sent(request: Request) -> HTMLResponse:
        return HTMLResponse("<p>sent</p>")

    # --- redirect_slashes: only the slashed routes exist ------------------------------------

    @app.get("/catalog/")
    async def catalog() -> HTMLResponse:
        return HTMLResponse("<p>catalog</p>")

    @app.post("/api/notes/")
    async def create_note(note: Item) -> dict[str, str]:
        return {"created": note.name}

    # --- a moved API: v1 answers 301 (or 308) to v2, which takes the same method -------------

    @app.put("/v1/items/{item_id}")
    async def old_item(item_id: int) -> RedirectResponse:
        return RedirectResponse(f"/v2/items/{item_id}", status_code=301)

    @app.put("/v2/items/{item_id}")
    async def put_item(item_id: int, item: Item) -> dict[str, object]:
        return {"id": item_id, "name": item.name}

    # near miss: the same move with 308
    @app.put("/v1/orders/{order_id}")
    async def old_order(order_id: int) -> RedirectResponse:
        return RedirectResponse(f"/v2/orders/{order_id}", status_code=308)

    @app.put("/v2/orders/{order_id}")
    async def put_order(order_id: int, item: Item) -> dict[str, object]:
        return {"id": order_id, "name": item.name}

    return app


app = build_app()
