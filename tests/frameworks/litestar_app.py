"""A Litestar app whose redirects are Litestar's ``Redirect`` with its default status
(302). Each handler notes the ``path_template`` Litestar put in the ASGI scope, so a test
can compare the audit's place with the framework's own template."""

from __future__ import annotations

from litestar import Litestar, Request, get, post
from litestar.response import Redirect

# path_template values Litestar routed requests with (filled while serving)
SEEN_TEMPLATES: set[str] = set()


def _note(request: Request) -> None:
    template = request.scope.get("path_template")
    if isinstance(template, str):
        SEEN_TEMPLATES.add(template)


@post("/feedback")
async def feedback(request: Request) -> Redirect:
    await request.body()
    _note(request)
    return Redirect(path="/feedback/thanks")  # default status_code: 302


@get("/feedback/thanks")
async def feedback_thanks() -> str:
    return "thanks"


@get("/users/{user_id:int}/profile-old")
async def profile_old(request: Request, user_id: int) -> Redirect:
    _note(request)
    return Redirect(path=f"/users/{user_id}/profile")


@get("/users/{user_id:int}/profile")
async def profile(user_id: int) -> str:
    return f"profile {user_id}"


app = Litestar(route_handlers=[feedback, feedback_thanks, profile_old, profile])
