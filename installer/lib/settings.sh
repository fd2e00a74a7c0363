# shellcheck shell=bash
# The configuration /etc/appliance/appliance.toml: asked for on a terminal,
# or taken from flags; written once and never overwritten by a later run.

# Ask for what the flags did not give, when someone is at a terminal.
ask_missing_answers() {
    if [[ -f "$CONFIG_FILE" ]] || [[ ! -t 0 ]]; then
        return 0
    fi
    say "A few questions (Enter keeps the value in brackets):"
    AE_TITLE="$(ask "The appliance's AE title" "$AE_TITLE")"
    DICOM_PORT="$(ask "DICOM port" "$DICOM_PORT")"
    MODALITY_AE="$(ask "AE title of the ultrasound machine (empty: none yet)" \
        "$MODALITY_AE")"
    if [[ -n "$MODALITY_AE" ]]; then
        MODALITY_HOST="$(ask "Its IP address or host name (empty: any)" \
            "$MODALITY_HOST")"
    fi
    BACKUP_DIR="$(ask "Backup folder, on another disk (empty: none yet)" \
        "$BACKUP_DIR")"
}

ask() {
    local question="$1" default="$2" answer
    read -r -p "  $question [$default]: " answer
    printf '%s\n' "${answer:-$default}"
}

# Refuse bad answers before anything on the machine is changed.
check_answers() {
    check_ae_title "$AE_TITLE" "--ae-title"
    [[ -z "$MODALITY_AE" ]] || check_ae_title "$MODALITY_AE" "--modality-ae"
    check_port "$DICOM_PORT" "--dicom-port"
    check_port "$HTTP_PORT" "--http-port"
    check_port "$TLS_PORT" "--tls-port"
    check_port "$REDIRECT_PORT" "--redirect-port"
    if [[ -n "$MODALITY_HOST" && -z "$MODALITY_AE" ]]; then
        die "--modality-host needs --modality-ae"
    fi
    if [[ -n "$BACKUP_DIR" && "$BACKUP_DIR" != /* ]]; then
        die "--backup-dir: expected an absolute path, got '$BACKUP_DIR'"
    fi
    if [[ -n "$CERT_FILE" || -n "$KEY_FILE" ]]; then
        [[ -r "$CERT_FILE" && -r "$KEY_FILE" ]] \
            || die "--cert and --key: give both, as readable files"
        check_key_matches "$CERT_FILE" "$KEY_FILE"
    fi
}

# An AE title (PS3.5 6.2): 1 to 16 characters, no backslash, no control.
check_ae_title() {
    local title="$1" flag="$2"
    if (( ${#title} < 1 || ${#title} > 16 )) || [[ "$title" == *\\* ]] \
        || [[ ! "$title" =~ ^[[:print:]]+$ ]] || [[ ! "$title" =~ [^[:space:]] ]]; then
        die "$flag: an AE title has 1 to 16 characters and no backslash, got '$title'"
    fi
}

check_port() {
    local port="$1" flag="$2"
    if [[ ! "$port" =~ ^[0-9]{1,5}$ ]] || (( port < 1 || port > 65535 )); then
        die "$flag: expected a port number from 1 to 65535, got '$port'"
    fi
}

# Write appliance.toml unless it exists; the program checks it first.
write_config() {
    if [[ -f "$CONFIG_FILE" ]]; then
        say "Keeping the configuration $CONFIG_FILE"
        warn_ignored_flags
        return 0
    fi

    local scratch
    scratch="$(mktemp)"
    config_text >"$scratch"
    if ! "$PROGRAM_DIR/bin/appliance" --config "$scratch" config >/dev/null; then
        rm -f "$scratch"
        die "the configuration was refused (see above)"
    fi
    put_file 0640 root "$SERVICE_USER" "$scratch" "$CONFIG_FILE"
    rm -f "$scratch"
    say "Wrote $CONFIG_FILE"
}

config_text() {
    cat <<EOF
# The appliance's settings; \`appliance config\` lists them all with help.
# Written by installer/install.sh, which never overwrites this file.
# After a change:  systemctl restart appliance
data_dir = $(toml_string "$DATA_DIR")
ae_title = $(toml_string "$AE_TITLE")
dicom_port = $DICOM_PORT
http_host = "127.0.0.1"
http_port = $HTTP_PORT
# The browser reaches the web through nginx over HTTPS only; nginx passes the
# browser's address on, so audit rows and the login lock-out see the real one.
secure_cookies = true
trusted_proxies = ["127.0.0.1", "::1"]
EOF
    if [[ -n "$BACKUP_DIR" ]]; then
        printf 'backup_dir = %s\n' "$(toml_string "$ROOT$BACKUP_DIR")"
    fi
}

# A TOML basic string: backslash and double quote escaped.
toml_string() {
    local text="$1"
    text="${text//\\/\\\\}"
    text="${text//\"/\\\"}"
    printf '"%s"\n' "$text"
}

warn_ignored_flags() {
    local flag
    for flag in "${CONFIG_FLAGS_GIVEN[@]}"; do
        warn "$flag ignored: $CONFIG_FILE exists; edit it instead"
    done
}
