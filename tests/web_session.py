"""A browser-like web client for end-to-end tests: cookies, forms, redirects.

It keeps the session cookie, sends each form with its CSRF token and a
Referer as a browser does, and shows redirects instead of following them,
so that a test sees where the appliance sends it.
"""

from __future__ import annotations

import http.cookiejar
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@dataclass(frozen=True)
class Reply:
    """One response: status, headers and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode("utf-8", errors="replace")

    @property
    def location(self) -> str:
        """Where a redirect points, or an empty string."""
        return self.headers.get("location", "")


class _ShowRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


class WebSession:
    """One browser session against `base_url`.

    Parameters
    ----------
    base_url : str
        e.g. ``https://127.0.0.1:8443``.
    context : ssl.SSLContext, optional
        How to check the server's certificate.
    """

    def __init__(self, base_url: str, context: ssl.SSLContext | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies),
            urllib.request.HTTPSHandler(context=context),
            _ShowRedirects(),
        )

    def get(self, path: str) -> Reply:
        """GET a path of the site."""
        return self._send(urllib.request.Request(self.base_url + path))

    def post_form(self, path: str, fields: dict[str, str]) -> Reply:
        """Fetch the form at `path`, then post it with its CSRF token."""
        page = self.get(path)
        match = _CSRF.search(page.text)
        assert match, f"no CSRF token in {path}: {page.status} {page.text[:200]}"
        data = urllib.parse.urlencode({**fields, "csrf_token": match.group(1)})
        request = urllib.request.Request(
            self.base_url + path,
            data=data.encode(),
            headers={"Referer": self.base_url + path},
        )
        return self._send(request)

    def login(self, name: str, password: str) -> Reply:
        """Log in through the login form."""
        return self.post_form("/login", {"name": name, "password": password})

    def change_password(self, current: str, new: str) -> Reply:
        """Choose a new password through the account form."""
        return self.post_form(
            "/account/password", {"current": current, "new": new, "confirm": new}
        )

    def _send(self, request: urllib.request.Request) -> Reply:
        try:
            with self._opener.open(request, timeout=30) as response:
                return _reply(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            return _reply(error.code, error.headers, error.read())


def _reply(status: int, headers: object, body: bytes) -> Reply:
    items = headers.items()  # type: ignore[attr-defined]
    return Reply(status, {key.lower(): value for key, value in items}, body)
