"""While a restore switches data folders, every page says so and waits.

For the few seconds the appliance takes to put a restored data folder in
place of the one it served, ``app.db`` and ``index.db`` are being moved:
no request may open them, not even to find out who is logged in. The gate
runs before every other request hook (the login gate included) and answers
503 with a page that reloads itself; ``/healthz`` and static files still
answer.
"""

from __future__ import annotations

import logging

from flask import current_app, request

from appliance.restoring import Phase
from appliance.web.runtime import runtime

logger = logging.getLogger(__name__)

OPEN_ENDPOINTS = frozenset({"healthz", "static"})
RETRY_SECONDS = 2


def switching_gate() -> tuple[str, int, dict[str, str]] | None:
    """Answer 503 to every request but health and static files while switching.

    Returns
    -------
    tuple or None
        The "switching" page, or None to let the request go on.
    """
    wizard = runtime().restore
    if wizard is None or request.endpoint in OPEN_ENDPOINTS:
        return None
    if wizard.status().phase != Phase.SWITCHING:
        return None

    # Rendered without the context processors: Flask-Login's would look the
    # user up in app.db.
    template = current_app.jinja_env.get_template("switching.html")
    page = template.render(seconds=RETRY_SECONDS)
    return page, 503, {"Retry-After": str(RETRY_SECONDS)}
