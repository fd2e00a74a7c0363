# shellcheck shell=bash
# HTTPS in front of the web: a certificate (the owner's, or a self-signed
# one made here) and an nginx site that proxies to the appliance on loopback.

CERT_NAME="appliance.crt"
KEY_NAME="appliance.key"

# The owner's certificate replaces ours whenever given; a self-signed one is
# made only when there is none, so that an upgrade keeps what browsers know.
install_certificate() {
    put_dir 0750 root root "$TLS_DIR"
    if [[ -n "$CERT_FILE" ]]; then
        put_file 0644 root root "$CERT_FILE" "$TLS_DIR/$CERT_NAME"
        put_file 0600 root root "$KEY_FILE" "$TLS_DIR/$KEY_NAME"
        say "Installed the certificate $CERT_FILE"
    elif [[ ! -f "$TLS_DIR/$CERT_NAME" || ! -f "$TLS_DIR/$KEY_NAME" ]]; then
        make_self_signed_certificate
    fi
}

# Both PEM, and the key is the certificate's (checked before any change).
check_key_matches() {
    local cert="$1" key="$2" cert_public key_public
    cert_public="$(openssl x509 -in "$cert" -noout -pubkey)" \
        || die "--cert: not a PEM certificate: $cert"
    key_public="$(openssl pkey -in "$key" -pubout)" \
        || die "--key: not a PEM private key (or it has a passphrase): $key"
    [[ "$cert_public" == "$key_public" ]] \
        || die "--cert and --key do not belong together"
}

# Valid for the host's names and addresses, for 825 days (the longest that
# Apple's browsers accept); browsers still warn until it is trusted.
make_self_signed_certificate() {
    local scratch name
    scratch="$(mktemp -d)"
    name="$(host_name)"
    say "Making a self-signed certificate for $name"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -nodes -sha256 -days 825 -subj "/CN=$name" \
        -addext "subjectAltName=$(subject_alt_names)" \
        -addext "extendedKeyUsage=serverAuth" \
        -keyout "$scratch/key.pem" -out "$scratch/cert.pem" 2>/dev/null
    put_file 0644 root root "$scratch/cert.pem" "$TLS_DIR/$CERT_NAME"
    put_file 0600 root root "$scratch/key.pem" "$TLS_DIR/$KEY_NAME"
    rm -rf "$scratch"
}

host_name() {
    hostname --fqdn 2>/dev/null || hostname
}

# DNS names and IP addresses the browsers may use, e.g.
# DNS:archive,DNS:localhost,IP:127.0.0.1,IP:192.168.1.5
subject_alt_names() {
    local names=() address
    names+=("DNS:$(hostname)")
    if [[ "$(host_name)" != "$(hostname)" ]]; then
        names+=("DNS:$(host_name)")
    fi
    names+=("DNS:localhost" "IP:127.0.0.1")
    for address in $(host_addresses); do
        names+=("IP:$address")
    done
    local IFS=,
    printf '%s\n' "${names[*]}"
}

host_addresses() {
    hostname --all-ip-addresses 2>/dev/null || true
}

# The site, from the template; rewritten on every run.
install_nginx_site() {
    local http_port scratch https_suffix=""
    http_port="$(config_value http_port 8080)"
    if [[ "$TLS_PORT" != 443 ]]; then
        https_suffix=":$TLS_PORT"
    fi

    scratch="$(mktemp)"
    sed -e "s|@REDIRECT_PORT@|$REDIRECT_PORT|g" \
        -e "s|@TLS_PORT@|$TLS_PORT|g" \
        -e "s|@HTTPS_PORT_SUFFIX@|$https_suffix|g" \
        -e "s|@HTTP_PORT@|$http_port|g" \
        -e "s|@CERT_FILE@|$TLS_DIR/$CERT_NAME|g" \
        -e "s|@KEY_FILE@|$TLS_DIR/$KEY_NAME|g" \
        "$REPO/installer/nginx/appliance.conf" >"$scratch"
    if [[ ! -e /proc/net/if_inet6 ]]; then
        sed -i '/# ipv6$/d' "$scratch"
    fi

    put_dir 0755 root root "$NGINX_DIR/sites-available"
    put_dir 0755 root root "$NGINX_DIR/sites-enabled"
    put_file 0644 root root "$scratch" "$SITE_FILE"
    rm -f "$scratch"
    ln -sfn "../sites-available/$SERVICE.conf" "$SITE_LINK"
    disable_default_site
}

# Debian's example site also claims the default server on port 80.
disable_default_site() {
    local default_link="$NGINX_DIR/sites-enabled/default"
    if [[ -L "$default_link" ]]; then
        rm -f "$default_link"
        remember nginx_default_site disabled
        say "Disabled nginx's example site (sites-enabled/default)"
    fi
}

reload_nginx() {
    if (( STAGING )); then
        system nginx -t
        system systemctl enable nginx
        system systemctl reload-or-restart nginx
        return 0
    fi
    nginx -t -q || die "nginx refused its configuration (see above)"
    systemctl enable --quiet nginx
    systemctl reload-or-restart nginx
}

remove_nginx_site() {
    rm -f "$SITE_LINK" "$SITE_FILE"
    if [[ "$(remembered nginx_default_site '')" == disabled ]] \
        && [[ -f "$NGINX_DIR/sites-available/default" ]]; then
        ln -sfn ../sites-available/default "$NGINX_DIR/sites-enabled/default"
        remember nginx_default_site enabled
        say "Enabled nginx's example site again"
    fi
    if (( STAGING )) || systemctl is-active --quiet nginx; then
        system systemctl reload-or-restart nginx
    fi
}
