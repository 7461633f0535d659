"""Rules of the status family: status codes around redirects that say the wrong
thing about the response body."""

from __future__ import annotations

from collections.abc import Iterator

from auditor.analysis.rules._groups import finding, framework_fix, grouped_requests
from auditor.analysis.rules.base import AuditContext, Finding, rule

FAMILY = "status"


@rule(
    "delete-200-no-content",
    severity="info",
    title="DELETE answered 200 with an empty body",
    spec="RFC 9110 §9.3.5 (DELETE), §15.3.5 (204 No Content)",
    family=FAMILY,
    needs_links=False,
)
def delete_200_no_content(ctx: AuditContext) -> Iterator[Finding]:
    """A DELETE whose 200 OK carried no body at all: that is what 204 is for."""
    for group in grouped_requests(
        ctx,
        """method = 'DELETE' and status = 200
           and response_body_size = 0 and response_complete = 1""",
        target="null",
    ):
        yield finding(
            ctx,
            "delete-200-no-content",
            group,
            f"DELETE {group.source} answered 200 OK with an empty body ({group.seen()}). "
            f"200 promises a representation describing the result; clients that parse it "
            f"(response.json() in httpx or requests) fail on the empty body, while 204 tells "
            f"every client there is nothing to read.",
            "Answer 204 No Content (or 200 with a status body). "
            + framework_fix(
                ctx,
                starlette="return Response(status_code=204); in FastAPI declare "
                "@app.delete(..., status_code=204) and return None.",
                django="return HttpResponse(status=204).",
                litestar="@delete handlers default to 204: return None.",
            ),
        )


@rule(
    "body-on-no-content",
    severity="warning",
    title="204 or 304 response with a body",
    spec="RFC 9110 §15.3.5 (204), §15.4.5 (304), §6.4.1",
    family=FAMILY,
    needs_links=False,
)
def body_on_no_content(ctx: AuditContext) -> Iterator[Finding]:
    """The app sent body bytes on a 204 or 304, which can have no content.

    Measured on the app side: the ASGI server may refuse or drop them.
    """
    for group in grouped_requests(
        ctx, "status in (204, 304) and response_body_size > 0", target="null"
    ):
        yield finding(
            ctx,
            "body-on-no-content",
            group,
            f"{group.method} {group.source} answered {group.status} but the app sent a body "
            f"({group.seen()}). A {group.status} ends at its headers: uvicorn (httptools and "
            f"h11 alike) refuses the extra bytes, logs 'Exception in ASGI application' and "
            f"closes the connection, so clients lose keep-alive; a server that sent them "
            f"would desynchronise the next response on the connection.",
            f"Send no body with {group.status}; if there is something to say, use 200. "
            + framework_fix(
                ctx,
                starlette=f"return Response(status_code={group.status}) with no content "
                "(not JSONResponse(..., status_code=204)).",
                django=f"return HttpResponse(status={group.status}) with no content.",
                litestar=f"return Response(content=None, status_code={group.status}).",
            ),
        )
