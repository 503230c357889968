"""The operator console: server-rendered pages under /dashboard and their actions.

This module holds what pages and actions share: the blueprint, sign-in and CSRF checks, response
headers and template filters. ``pages`` reads through the same core functions as the API (listing,
batch view, delivery history); ``actions`` are POSTs carrying the session's CSRF token that call the
function the matching API endpoint calls (cancel, batch cancel, retry of failed tasks, redelivery).
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, make_response, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.wrappers import Response as BaseResponse

from taskq.api import ops, settings
from taskq.api.errors import status_of
from taskq.errors import Forbidden, TaskqError
from taskq.schemas.tasks import iso_ms

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/dashboard",
    template_folder="../templates",
    static_folder="../static",
    static_url_path="/static",
)

PAGE = 50
NOTICE_SALT = "taskq-console-notice"


@bp.app_template_filter("clock")
def _clock(epoch_ms: int) -> str:
    return iso_ms(int(epoch_ms))[11:19]


@bp.app_template_filter("rate")
def _rate(per_minute: float) -> str:
    return f"{per_minute:,.0f}" if per_minute >= 10 else f"{per_minute:.1f}".removesuffix(".0")


@bp.app_template_filter("stamp")
def _stamp(epoch_ms: int) -> str:
    return iso_ms(int(epoch_ms))[:19].replace("T", " ") + " UTC"


#: Console pages run only their own script and style, cannot be framed (no clickjacking of the action
#: buttons) and are not cached.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


# Sign-in ------------------------------------------------------------------------------------------
class SignedOut(Exception):
    """A console page was asked for without a valid session."""


@bp.errorhandler(SignedOut)
def _signed_out(_exc: SignedOut) -> Response:
    return make_response(render_template("console/login.html", error=None, next=request.full_path), 401)


@bp.errorhandler(TaskqError)
def _failed(exc: TaskqError) -> Response:
    status = status_of(exc)
    page_csrf = ops.session_csrf() if settings().admin_token is not None else None
    return make_response(render_template("console/error.html", error=exc, csrf=page_csrf), status)


def csrf() -> str:
    """The signed-in operator's CSRF token (raises SignedOut without a session)."""
    ops.admin_token()
    token = ops.session_csrf()
    if token is None:
        raise SignedOut
    return token


def _signed_in(target: str) -> BaseResponse:
    value, _ = ops.new_session()
    response = redirect(target if target.startswith("/dashboard") else url_for("console.overview"), 303)
    ops.set_session_cookie(response, value)
    return response


@bp.post("/login")
def login() -> ResponseReturnValue:
    ops.admin_token()
    if not ops.token_matches(request.form.get("token", "")):
        return make_response(render_template("console/login.html", error="Invalid admin token", next=""), 401)
    return _signed_in(request.form.get("next", ""))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    checked_form()
    response = redirect(url_for("console.overview"), 303)
    response.delete_cookie(ops.SESSION_COOKIE, path="/")
    return response


def checked_form() -> None:
    """A console action: signed in, and the form carries this session's CSRF token."""
    expected = csrf()
    if not hmac.compare_digest(request.form.get("csrf", "").encode(), expected.encode()):
        raise Forbidden("The form's CSRF token is missing or wrong: reload the page and try again")


def notice() -> str | None:
    raw = request.args.get("notice")
    if not raw:
        return None
    try:
        text = URLSafeSerializer(ops.admin_token(), salt=NOTICE_SALT).loads(raw)
    except BadSignature:
        return None
    return text if isinstance(text, str) else None


def back(endpoint: str, message: str, **values: Any) -> BaseResponse:
    notice = URLSafeSerializer(ops.admin_token(), salt=NOTICE_SALT).dumps(message)
    return redirect(url_for(endpoint, **values, notice=notice), 303)


def signed_in_page(token: str) -> BaseResponse:
    """The link `taskq up` prints: trade the token for a session and drop it from the address bar."""
    ops.admin_token()
    if not ops.token_matches(token):
        return make_response(render_template("console/login.html", error="Invalid admin token", next=""), 401)
    return _signed_in(url_for("console.overview"))


from taskq.api.console import actions, pages  # noqa: E402  (their routes register on bp)

__all__ = ["actions", "bp", "pages"]
