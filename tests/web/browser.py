"""Headless Chromium for the end-to-end tests: Debian's, driven by Playwright.

Never ``playwright install``: the browser is the ``chromium`` package that
``installer/dev-setup.sh --test`` installs, and it fetches nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts"


def chromium_path() -> Path | None:
    """Return Debian's Chromium, or None when it is not installed."""
    if CHROMIUM.exists():
        return CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None
