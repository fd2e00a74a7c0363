"""The web application: a Flask app factory served by waitress."""

from appliance.web.app import create_app
from appliance.web.runtime import WebOptions

__all__ = ["WebOptions", "create_app"]
