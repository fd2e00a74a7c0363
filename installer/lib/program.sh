# shellcheck shell=bash
# The program in /opt/appliance (a virtual environment owned by root), the
# folders, and what a new data folder needs: the modality and the first admin.

install_program() {
    local python
    python="$(system_python)"

    # Root owns the program and everybody may read it; the service user
    # cannot change its own code.
    if [[ ! -x "$PROGRAM_DIR/bin/python" ]]; then
        say "Creating the program folder $PROGRAM_DIR"
        (umask 0022 && "$python" -m venv "$PROGRAM_DIR")
    fi
    say "Installing the appliance from $REPO (this takes a minute)"
    (umask 0022 && "$PROGRAM_DIR/bin/python" -m pip install --quiet \
        --disable-pip-version-check --upgrade "$REPO")
}

make_folders() {
    put_dir 0750 root "$SERVICE_USER" "$CONFIG_DIR"
    put_dir 0750 "$SERVICE_USER" "$SERVICE_USER" "$DATA_DIR"
}

# The backup folder (backup_dir in appliance.toml; none when empty) is often
# a mounted disk. A missing folder is made only when its parent is on another
# file system than the data folder (the backup disk is mounted and the folder
# is new on it). Otherwise the disk is most likely not mounted, and making the
# folder would put the backups on the data disk without anyone noticing: say
# so and leave it to the owner; the appliance shows a banner until it exists.
make_backup_folder() {
    local folder="$1"
    if [[ -z "$folder" ]]; then
        return 0
    fi
    if [[ ! -d "$folder" ]]; then
        if on_other_disk "$(dirname "$folder")" "$DATA_DIR"; then
            put_dir 0750 "$SERVICE_USER" "$SERVICE_USER" "$folder"
        else
            warn "the backup folder $folder does not exist, and making it here" \
                "would put the backups on the data disk. Mount the backup disk," \
                "then: install -d -m 0750 -o $SERVICE_USER -g $SERVICE_USER $folder"
        fi
        return 0
    fi
    if service_user_exists; then
        chown "$SERVICE_USER:$SERVICE_USER" "$folder" \
            || warn "could not give $folder to $SERVICE_USER; backups may fail"
    fi
}

# True when folder $1 exists and is on another file system than folder $2.
on_other_disk() {
    [[ -d "$1" ]] || return 1
    [[ "$(stat -c %d "$1")" != "$(stat -c %d "$2")" ]]
}

# True when no app.db exists yet: a first install, not an upgrade.
data_is_new() {
    [[ ! -e "$DATA_DIR/app.db" ]]
}

register_modality() {
    if [[ -z "$MODALITY_AE" ]]; then
        return 0
    fi
    local options=(--exist-ok)
    if [[ -n "$MODALITY_HOST" ]]; then
        options+=(--host "$MODALITY_HOST")
    fi
    appliance_cli modality add "$MODALITY_AE" "${options[@]}"
}

# The first admin, with a random password that must be changed at the first
# login. Printed once, at the end; it is nowhere else.
create_first_admin() {
    ADMIN_PASSWORD="$("$PROGRAM_DIR/bin/python" -c \
        'import secrets; print(secrets.token_urlsafe(12))')"
    printf '%s\n' "$ADMIN_PASSWORD" \
        | appliance_cli user add admin --role admin --temporary >/dev/null
}

# A staging install as root leaves files made by the program owned by root;
# hand them to the service user when it exists.
hand_data_to_service_user() {
    if (( STAGING )) && (( EUID == 0 )) && service_user_exists; then
        chown -R "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR"
    fi
}
