#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Install the appliance on a clinic's server (Debian 12, Ubuntu 22.04 or
# newer), or upgrade it in place, or remove the program. Run as root from
# a checkout of the repository:
#
#   installer/install.sh [--ae-title AE] [--dicom-port 104] \
#       [--modality-ae AE [--modality-host HOST]] [--backup-dir DIR] \
#       [--cert FILE --key FILE]
#   installer/install.sh --uninstall
#
# See usage() below for every option. What it makes:
#   /opt/appliance                     the program (a Python venv, root's)
#   /etc/appliance/appliance.toml      settings; never overwritten
#   /etc/appliance/tls/                the HTTPS certificate and key
#   /var/lib/appliance                 the archive (appliance:appliance 0750)
#   /etc/systemd/system/appliance.service (+ .d/backup.conf)
#   /etc/nginx/sites-available/appliance.conf (enabled)
set -euo pipefail
export LC_ALL=C

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICE="appliance"
SERVICE_USER="appliance"

# shellcheck source=lib/common.sh
source "$REPO/installer/lib/common.sh"
# shellcheck source=lib/system.sh
source "$REPO/installer/lib/system.sh"
# shellcheck source=lib/settings.sh
source "$REPO/installer/lib/settings.sh"
# shellcheck source=lib/program.sh
source "$REPO/installer/lib/program.sh"
# shellcheck source=lib/web.sh
source "$REPO/installer/lib/web.sh"
# shellcheck source=lib/unit.sh
source "$REPO/installer/lib/unit.sh"

usage() {
    cat <<'EOF'
Usage: installer/install.sh [OPTIONS]      install, or upgrade in place
       installer/install.sh --uninstall     remove the program, keep the data

Settings for a new installation (asked for when run on a terminal; a later
run keeps /etc/appliance/appliance.toml as it is):
  --ae-title AE         the appliance's DICOM AE title (default ARCHIVE)
  --dicom-port PORT     DICOM port (default 104)
  --modality-ae AE      register the ultrasound machine's AE title
  --modality-host HOST  and accept it only from this address
  --backup-dir DIR      folder for backups, e.g. a mounted disk
  --http-port PORT      the web server's port on loopback (default 8080)

HTTPS (nginx in front of the web):
  --cert FILE --key FILE  the owner's certificate and key (PEM); without
                          them a self-signed certificate is made once
  --tls-port PORT         HTTPS port (default 443)
  --redirect-port PORT    plain HTTP port that redirects (default 80)

  --root DIR            install into DIR as if it were /, for tests: no
                        packages, users or services; those are listed in
                        DIR/staged-actions.txt
  -h, --help            this text
EOF
}

parse_arguments() {
    AE_TITLE="ARCHIVE" DICOM_PORT=104 HTTP_PORT=8080
    MODALITY_AE="" MODALITY_HOST="" BACKUP_DIR=""
    CERT_FILE="" KEY_FILE="" TLS_PORT="" REDIRECT_PORT=""
    ROOT_ARG="" UNINSTALL=0 STAGING=0
    CONFIG_FLAGS_GIVEN=()

    while (( $# )); do
        case "$1" in
            --ae-title | --dicom-port | --modality-ae | --modality-host | \
                --backup-dir | --http-port | --cert | --key | --tls-port | \
                --redirect-port | --root)
                (( $# >= 2 )) || die "$1 needs a value"
                set_option "$1" "$2"
                shift 2
                ;;
            --uninstall) UNINSTALL=1; shift ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown option: $1" ;;
        esac
    done
}

set_option() {
    local flag="$1" value="$2"
    case "$flag" in
        --ae-title) AE_TITLE="$value" ;;
        --dicom-port) DICOM_PORT="$value" ;;
        --modality-ae) MODALITY_AE="$value" ;;
        --modality-host) MODALITY_HOST="$value" ;;
        --backup-dir) BACKUP_DIR="${value%/}" ;;
        --http-port) HTTP_PORT="$value" ;;
        --cert) CERT_FILE="$value" ;;
        --key) KEY_FILE="$value" ;;
        --tls-port) TLS_PORT="$value" ;;
        --redirect-port) REDIRECT_PORT="$value" ;;
        --root) ROOT_ARG="$value"; STAGING=1 ;;
    esac
    case "$flag" in
        --ae-title | --dicom-port | --backup-dir | --http-port)
            CONFIG_FLAGS_GIVEN+=("$flag") ;;
    esac
}

# The staging folder must be a plain absolute path: it goes into sed
# expressions and into the files written.
resolve_root() {
    if (( ! STAGING )); then
        set_paths ""
        return 0
    fi
    mkdir -p "$ROOT_ARG"
    local root
    root="$(cd "$ROOT_ARG" && pwd -P)"
    [[ "$root" =~ ^/[A-Za-z0-9._/-]+$ && "$root" != / ]] \
        || die "--root: use a plain absolute folder, got '$ROOT_ARG'"
    set_paths "$root"
}

# The nginx ports are the installer's own choice: kept for the next run.
settle_nginx_ports() {
    TLS_PORT="${TLS_PORT:-$(remembered tls_port 443)}"
    REDIRECT_PORT="${REDIRECT_PORT:-$(remembered redirect_port 80)}"
}

install_or_upgrade() {
    local fresh=0

    check_system
    ask_missing_answers
    check_answers
    install_packages
    create_service_user
    install_program
    make_folders
    write_config
    make_backup_folder "$(config_value backup_dir "")"
    remember tls_port "$TLS_PORT"
    remember redirect_port "$REDIRECT_PORT"

    install_certificate
    install_nginx_site
    reload_nginx
    install_unit

    # A new data folder gets its modality and first admin before the first
    # start; an upgrade restarts first, so that migrations run in the service.
    if data_is_new; then
        fresh=1
        register_modality
        create_first_admin
        hand_data_to_service_user
        start_service
    else
        start_service
        register_modality
        hand_data_to_service_user
    fi
    print_summary "$fresh"
}

print_summary() {
    local fresh="$1" address port_suffix="" ae_title dicom_port
    ae_title="$(config_value ae_title APPLIANCE)"
    dicom_port="$(config_value dicom_port 11112)"
    if [[ "$TLS_PORT" != 443 ]]; then
        port_suffix=":$TLS_PORT"
    fi

    say ""
    if (( STAGING )); then
        say "The appliance is staged in $ROOT (nothing was started)."
    else
        say "The appliance is installed and running."
    fi
    say "  Web:    https://$(host_name)$port_suffix/"
    for address in $(host_addresses); do
        [[ "$address" == *:* ]] && continue
        say "          https://$address$port_suffix/"
    done
    say "  DICOM:  AE title $ae_title, port $dicom_port"
    say "  Settings: $CONFIG_FILE   Data: $DATA_DIR"
    if (( fresh )); then
        say ""
        say "First login: user 'admin', one-time password: $ADMIN_PASSWORD"
        say "It is shown only now; the web asks for a new one at the first login."
    else
        say "  Upgraded in place: settings, accounts and data kept."
    fi
}

uninstall() {
    if (( ! STAGING )); then
        (( EUID == 0 )) || die "run as root, e.g. sudo $0 --uninstall"
    fi
    remove_unit
    remove_nginx_site
    rm -rf "$PROGRAM_DIR"
    say "Removed the program ($PROGRAM_DIR), the systemd unit and the nginx site."
    say "Kept: $CONFIG_DIR (settings, TLS key), $DATA_DIR (the archive),"
    say "the user $SERVICE_USER and the OS packages. Delete them by hand if wanted."
}

main() {
    parse_arguments "$@"
    resolve_root
    if (( UNINSTALL )); then
        uninstall
    else
        settle_nginx_ports
        install_or_upgrade
    fi
}

main "$@"
