"""The client's address behind a reverse proxy, believed only from the proxy.

Behind nginx every request comes from 127.0.0.1; nginx puts the browser's
address in ``X-Forwarded-For``. That header is believed only when the
request comes from an address in the ``trusted_proxies`` setting: anybody
else could send one to put a false address in the audit trail or to dodge
the lock-out of their own. For those requests werkzeug's ``ProxyFix`` takes
the last address of the header (the one our proxy added) and the scheme
from ``X-Forwarded-Proto``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.middleware.proxy_fix import ProxyFix

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """WSGI middleware: apply ``ProxyFix`` to requests from trusted proxies.

    Parameters
    ----------
    app : WSGI application
        The application to wrap.
    proxies : iterable of str
        Addresses or networks, e.g. ``("127.0.0.1", "::1")``.
    """

    def __init__(self, app: WSGIApplication, proxies: Iterable[str]) -> None:
        self.app = app
        self.fixed = ProxyFix(app, x_for=1, x_proto=1)
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(item, strict=False) for item in proxies
        )

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """Serve one request, through ``ProxyFix`` if a trusted proxy sent it."""
        if self.trusts(environ.get("REMOTE_ADDR", "")):
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)

    def trusts(self, address: Any) -> bool:
        """Tell whether `address` is one of the trusted proxies."""
        try:
            peer = ipaddress.ip_address(str(address))
        except ValueError:
            return False
        return any(peer in network for network in self.networks)
