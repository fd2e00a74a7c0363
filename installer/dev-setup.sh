#!/usr/bin/env bash
# Set up a development checkout on Debian 12: OS packages, then .venv.
#
#   installer/dev-setup.sh          what the appliance needs to run
#   installer/dev-setup.sh --test   plus what the test suite drives (DCMTK, ...)
#   installer/dev-setup.sh --bench  plus Orthanc's web viewer, for bench/
#
# Idempotent: a second run only checks. Runs apt-get as root, or through sudo.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
want_test=0
want_bench=0
case "${1:-}" in
    --test) want_test=1 ;;
    --bench) want_test=1; want_bench=1 ;;
    "") ;;
    *) echo "dev-setup.sh: unknown option ${1} (--test or --bench)" >&2; exit 2 ;;
esac

packages=(python3 python3-venv python3-dev)
if (( want_test )); then
    # chromium: the end-to-end web tests drive Debian's browser through
    # Playwright (never `playwright install`: nothing is downloaded).
    # orthanc: a real PACS peer for the Query/Retrieve tests (run by the
    # tests as a subprocess; its systemd service is not used).
    packages+=(dcmtk chromium orthanc)
    # The install tests: nginx as the HTTPS front, systemd-analyze for the
    # unit, python3-seccomp to run the appliance under the unit's system
    # call filter, openssl, and shellcheck for the installer's scripts.
    packages+=(nginx systemd python3-seccomp openssl shellcheck)
    # slapd: a real OpenLDAP directory for the LDAP login tests (started by
    # the tests on a loopback port; its own service is not used).
    packages+=(slapd ldap-utils)
fi
if (( want_bench )); then
    # The viewer benchmark times Orthanc's own web viewer plug-in.
    packages+=(orthanc-webviewer)
fi

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$package")
done
if (( ${#missing[@]} )); then
    sudo_cmd=()
    (( EUID == 0 )) || sudo_cmd=(sudo)
    echo "Installing OS packages: ${missing[*]}"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
        "${missing[@]}" >/dev/null
fi

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
if (( want_test )); then
    "$venv/bin/python" -m pip install -q -e "${repo}[test]"
else
    "$venv/bin/python" -m pip install -q -e "$repo"
fi
