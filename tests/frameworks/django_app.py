"""A Django project in one module, served through Django's own ASGI handler.

Settings are configured in-process: ``CommonMiddleware`` with ``APPEND_SLASH=True``
(Django's default) and ``DEBUG=False`` as in production; CSRF protection is on and the
test forms are ``csrf_exempt``. Every redirect is Django's own: ``redirect()`` (302),
an ``HttpResponseRedirect`` subclass with status 303, and ``APPEND_SLASH``'s 301.

Serve it with ``redirect-auditor run tests.frameworks.django_app:application``.
"""

from __future__ import annotations

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="redirect-auditor-tests-not-a-secret",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        APPEND_SLASH=True,
        MIDDLEWARE=[
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

from django.core.asgi import get_asgi_application
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
)
from django.shortcuts import redirect
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_safe

CONTACT_FORM = """<!doctype html>
<html><head><link rel="icon" href="data:,"><title>contact</title></head><body>
<form method="post" action="/contact/"><input name="message" value="hello"></form>
<script>document.forms[0].submit()</script>
</body></html>"""


class HttpResponseSeeOther(HttpResponseRedirect):
    """Django has no 303 class; this is the usual one-line subclass."""

    status_code = 303


@csrf_exempt
@require_http_methods(["GET", "POST"])
def contact(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return redirect("thanks")  # 302
    return HttpResponse(CONTACT_FORM)


PAGE = '<!doctype html><html><head><link rel="icon" href="data:,"></head><body>{}</body></html>'


@require_safe
def thanks(request: HttpRequest) -> HttpResponse:
    return HttpResponse(PAGE.format("<p>thanks</p>"))


@csrf_exempt
@require_http_methods(["POST"])
def newsletter(request: HttpRequest) -> HttpResponse:
    return HttpResponseSeeOther("/newsletter/done/")


@require_safe
def newsletter_done(request: HttpRequest) -> HttpResponse:
    return HttpResponse("<p>subscribed</p>")


@require_safe
def article(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse(f"<p>article {pk}</p>")


@csrf_exempt
@require_http_methods(["GET", "POST"])
def comments(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        f"comments ({request.method})", status=201 if request.method == "POST" else 200
    )


urlpatterns = [
    path("contact/", contact, name="contact"),
    path("contact/thanks/", thanks, name="thanks"),
    path("newsletter/", newsletter, name="newsletter"),
    path("newsletter/done/", newsletter_done, name="newsletter-done"),
    path("articles/<int:pk>/", article, name="article"),
    path("comments/", comments, name="comments"),
]

application = get_asgi_application()
