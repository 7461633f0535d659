"""The app the soak harness serves: one page and one redirect, nothing else."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route


async def page(request: Request) -> Response:
    return PlainTextResponse("ok")


async def moved(request: Request) -> Response:
    return RedirectResponse("/page", status_code=308)


app = Starlette(routes=[Route("/page", page), Route("/moved", moved)])
