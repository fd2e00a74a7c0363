"""The web application: a Flask app factory served by waitress."""

from appliance.web.app import create_app

__all__ = ["create_app"]
