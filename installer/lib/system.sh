# shellcheck shell=bash
# The machine: which system this is, its packages, Python, and the service
# user. A staging install (--root) changes none of it, only records it.

OS_PACKAGES=(python3 python3-venv nginx openssl ca-certificates util-linux)

check_system() {
    if (( STAGING )); then
        return 0
    fi
    (( EUID == 0 )) || die "run as root, e.g. sudo $0"
    [[ -r /etc/os-release ]] || die "cannot tell the system: no /etc/os-release"

    local id version
    id="$(. /etc/os-release && printf '%s' "${ID:-}")"
    version="$(. /etc/os-release && printf '%s' "${VERSION_ID:-}")"
    case "$id:$version" in
        debian:1[2-9]* | ubuntu:2[2-9].* | ubuntu:[3-9]*) ;;
        *) die "this installer supports Debian 12 and Ubuntu 22.04 or newer, not $id $version" ;;
    esac
    command -v systemctl >/dev/null || die "systemd is needed"
}

install_packages() {
    local wanted=("${OS_PACKAGES[@]}") missing=() package

    # Ubuntu 22.04's python3 is 3.10; the appliance needs 3.11, which that
    # release ships as python3.11.
    if ! python_is_new_enough /usr/bin/python3; then
        wanted+=(python3.11 python3.11-venv)
    fi

    for package in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null \
            | grep -q "ok installed" || missing+=("$package")
    done
    if (( ${#missing[@]} == 0 )); then
        return 0
    fi
    say "Installing OS packages: ${missing[*]}"
    system apt-get update -qq
    DEBIAN_FRONTEND=noninteractive system apt-get install -y -qq "${missing[@]}"
}

python_is_new_enough() {
    [[ -x "$1" ]] && "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))'
}

# The system's Python (never one from a user's PATH, such as pyenv's: the
# service user could not reach it).
system_python() {
    local candidate
    for candidate in /usr/bin/python3 /usr/bin/python3.11 /usr/bin/python3.12; do
        if python_is_new_enough "$candidate"; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    die "no Python 3.11 or newer in /usr/bin"
}

create_service_user() {
    if service_user_exists; then
        return 0
    fi
    say "Creating system user $SERVICE_USER"
    system useradd --system --user-group --no-create-home \
        --home-dir /var/lib/appliance --shell /usr/sbin/nologin \
        --comment "DICOM archive appliance" "$SERVICE_USER"
}
