#!/usr/bin/env bash
# Set up everything the tests need, then run the whole suite.
# Extra arguments go to pytest, e.g.  installer/test.sh -k store -x
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/installer/dev-setup.sh" --test
cd "$repo"
exec .venv/bin/python -m pytest -ra "$@"
