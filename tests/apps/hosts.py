"""Two hosts for the multi-host tests: `checkout` redirects to the host in $LANDING_HOST."""

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route


async def checkout(request: Request) -> Response:
    return RedirectResponse(f"{os.environ['LANDING_HOST']}/landing", status_code=301)


async def landing(request: Request) -> Response:
    return PlainTextResponse("landed")


checkout_host = Starlette(routes=[Route("/checkout", checkout, methods=["GET", "POST"])])
landing_host = Starlette(routes=[Route("/landing", landing)])
