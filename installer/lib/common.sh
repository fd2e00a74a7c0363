# shellcheck shell=bash
# Shared by installer/install.sh: messages, where things go, and how files
# and system changes are made (for real, or recorded in a staging folder).

# Where everything goes. ROOT is empty for a real install; with --root DIR
# every path is prefixed with DIR, inside the files written too.
# shellcheck disable=SC2034  # the other files of lib/ use these
set_paths() {
    local root="$1"
    ROOT="$root"
    PROGRAM_DIR="$root/opt/appliance"
    CONFIG_DIR="$root/etc/appliance"
    CONFIG_FILE="$CONFIG_DIR/appliance.toml"
    INSTALL_ENV="$CONFIG_DIR/install.env"
    TLS_DIR="$CONFIG_DIR/tls"
    DATA_DIR="$root/var/lib/appliance"
    UNIT_DIR="$root/etc/systemd/system"
    UNIT_FILE="$UNIT_DIR/$SERVICE.service"
    DROPIN_DIR="$UNIT_DIR/$SERVICE.service.d"
    NGINX_DIR="$root/etc/nginx"
    SITE_FILE="$NGINX_DIR/sites-available/$SERVICE.conf"
    SITE_LINK="$NGINX_DIR/sites-enabled/$SERVICE.conf"
    STAGED_ACTIONS="$root/staged-actions.txt"
}

say() {
    printf '%s\n' "$*"
}

warn() {
    printf 'install.sh: warning: %s\n' "$*" >&2
}

die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

# Run a command that changes the machine itself: packages, users, services.
# A staging install only records it in staged-actions.txt.
system() {
    if (( STAGING )); then
        printf '%q ' "$@" >>"$STAGED_ACTIONS"
        printf '\n' >>"$STAGED_ACTIONS"
        return 0
    fi
    "$@"
}

service_user_exists() {
    id -u "$SERVICE_USER" >/dev/null 2>&1
}

# Owner options for install(1): the service user when it exists (always on
# a real install), else whoever runs a staging install.
owner_options() {
    local owner="$1" group="$2"
    local options=()
    if [[ "$owner" != "$SERVICE_USER" ]] || service_user_exists; then
        options+=(-o "$owner")
    fi
    if [[ "$group" != "$SERVICE_USER" ]] || service_user_exists; then
        options+=(-g "$group")
    fi
    if (( STAGING )) && (( EUID != 0 )); then
        options=()
    fi
    if (( ${#options[@]} )); then
        printf '%s\n' "${options[@]}"
    fi
}

# Put a file in place with its mode and owner; the target is replaced whole.
put_file() {
    local mode="$1" owner="$2" group="$3" source="$4" target="$5"
    local options
    mapfile -t options < <(owner_options "$owner" "$group")
    install -m "$mode" "${options[@]}" "$source" "$target"
}

# Make a folder (and its parents) with this mode and owner.
put_dir() {
    local mode="$1" owner="$2" group="$3" target="$4"
    local options
    mapfile -t options < <(owner_options "$owner" "$group")
    install -d -m "$mode" "${options[@]}" "$target"
}

# Run the appliance's own command as the service user, with the service's
# umask, so that what it creates in the data folder belongs to the service.
appliance_cli() {
    local command=("$PROGRAM_DIR/bin/appliance" --config "$CONFIG_FILE" "$@")
    if (( STAGING )); then
        (umask 0027 && "${command[@]}")
    else
        (umask 0027 && runuser -u "$SERVICE_USER" -- "${command[@]}")
    fi
}

# Read a top-level key of appliance.toml (the file is flat) with the
# program's own Python; print the fallback when the key is absent.
config_value() {
    local key="$1" fallback="$2"
    "$PROGRAM_DIR/bin/python" - "$CONFIG_FILE" "$key" "$fallback" <<'PYTHON'
import sys
import tomllib

path, key, fallback = sys.argv[1:4]
with open(path, "rb") as handle:
    print(tomllib.load(handle).get(key, fallback))
PYTHON
}

# Remember the installer's own choices (not appliance settings) for the
# next run: key=value lines in install.env.
remembered() {
    local key="$1" fallback="$2" line
    if [[ -f "$INSTALL_ENV" ]]; then
        while IFS= read -r line; do
            if [[ "$line" == "$key="* ]]; then
                printf '%s\n' "${line#*=}"
                return 0
            fi
        done <"$INSTALL_ENV"
    fi
    printf '%s\n' "$fallback"
}

remember() {
    local key="$1" value="$2" scratch
    scratch="$(mktemp)"
    if [[ -f "$INSTALL_ENV" ]]; then
        grep -v "^$key=" "$INSTALL_ENV" >"$scratch" || true
    else
        printf '%s\n' "# The installer's choices, read again by its next run." >"$scratch"
    fi
    printf '%s=%s\n' "$key" "$value" >>"$scratch"
    put_file 0644 root root "$scratch" "$INSTALL_ENV"
    rm -f "$scratch"
}
