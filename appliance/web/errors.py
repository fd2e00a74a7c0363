"""Every error becomes a friendly page, in one place, that leaks nothing.

The pages say what happened in plain words and never echo the request, a
path, a patient or an exception. Unexpected errors are logged with their
traceback (Flask's own handler), which holds UIDs at most, never names.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from appliance.web.render.pixels import RenderError

logger = logging.getLogger(__name__)

MESSAGES = {
    400: ("Bad request", "The request could not be understood."),
    401: ("Login needed", "Please log in."),
    403: ("Not allowed", "Your account does not have access to this page."),
    404: ("Not found", "There is nothing here. It may have been moved."),
    405: ("Not allowed", "This page cannot be used this way."),
    413: ("Too large", "The request was too large."),
    422: ("Cannot display", "This image cannot be displayed."),
    500: ("Something went wrong", "The appliance could not complete the request."),
}


def register_error_handlers(app: Flask) -> None:
    """Install the handlers for HTTP errors, CSRF failures and crashes."""
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(RenderError, _render_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(InternalServerError, _internal_error)


def error_page(code: int) -> tuple[str, int]:
    """Render the friendly page for an HTTP status."""
    title, message = MESSAGES.get(code, MESSAGES[500])
    return render_template("error.html", code=code, title=title, message=message), code


def _http_error(error: HTTPException) -> Any:
    code = error.code or 500
    if code < 400:
        return error
    return error_page(code)


def _csrf_error(_error: CSRFError) -> Any:
    logger.warning(
        "Refused a form without a valid CSRF token from %s", request.remote_addr
    )
    page = render_template(
        "error.html",
        code=400,
        title="Form expired",
        message="The form had expired. Go back, reload the page and try again.",
    )
    return page, 400


def _render_error(error: RenderError) -> Any:
    logger.warning("Could not render for %s: %s", request.path, error)
    return error_page(422)


def _internal_error(_error: InternalServerError) -> Any:
    return error_page(500)
