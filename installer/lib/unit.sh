# shellcheck shell=bash
# The systemd unit from systemd/, its backup drop-in, and starting it.

install_unit() {
    local scratch
    scratch="$(mktemp)"
    with_root_prefix <"$REPO/systemd/$SERVICE.service" >"$scratch"
    put_dir 0755 root root "$UNIT_DIR"
    put_file 0644 root root "$scratch" "$UNIT_FILE"
    rm -f "$scratch"
    install_backup_dropin
}

# In a staging install the unit names the staged paths.
with_root_prefix() {
    sed -e "s|/opt/appliance|$ROOT/opt/appliance|g" \
        -e "s|/etc/appliance|$ROOT/etc/appliance|g" \
        -e "s|/var/lib/appliance|$ROOT/var/lib/appliance|g"
}

# ProtectSystem=strict leaves only the data folder writable; the backup
# folder from appliance.toml is added here. The "-" lets the appliance
# start (and keep receiving) while the backup disk is not mounted.
install_backup_dropin() {
    local backup_dir scratch
    backup_dir="$(config_value backup_dir "")"
    if [[ -z "$backup_dir" ]]; then
        rm -rf "$DROPIN_DIR"
        return 0
    fi
    scratch="$(mktemp)"
    printf '%s\n' \
        "# Written by installer/install.sh from backup_dir in appliance.toml." \
        "[Service]" \
        "ReadWritePaths=-$backup_dir" >"$scratch"
    put_dir 0755 root root "$DROPIN_DIR"
    put_file 0644 root root "$scratch" "$DROPIN_DIR/backup.conf"
    rm -f "$scratch"
}

# A restart both starts a new install and runs the new code of an upgrade;
# it returns once the appliance says READY=1 (Type=notify).
start_service() {
    system systemctl daemon-reload
    system systemctl enable --quiet "$SERVICE.service"
    say "Starting the appliance"
    if ! system systemctl restart "$SERVICE.service"; then
        die "the appliance did not start; see: journalctl -u $SERVICE -n 50"
    fi
}

remove_unit() {
    system systemctl disable --now --quiet "$SERVICE.service" || true
    rm -rf "$UNIT_FILE" "$DROPIN_DIR"
    system systemctl daemon-reload
    system systemctl reset-failed "$SERVICE.service" || true
}
