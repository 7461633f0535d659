"""A FastAPI app with a path-parameter route, a router prefix and a mounted sub-app."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse

app = FastAPI()
router = APIRouter(prefix="/shop")
sub = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"item": item_id}


@router.post("/orders/{order_id}")
async def order(order_id: int) -> RedirectResponse:
    return RedirectResponse(f"/shop/orders/{order_id}/done", status_code=303)


@sub.get("/pages/{slug}")
async def page(slug: str) -> dict[str, str]:
    return {"page": slug}


app.include_router(router)
app.mount("/docs-site", sub)
