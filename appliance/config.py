"""The appliance's settings: one table, layered sources, validated at start.

Every setting is a field of :class:`Settings` with its default, a line of help
and a parser that validates it. Values are layered, later ones winning:

1. the defaults below, which run a complete demo appliance in ``./data``;
2. the TOML file given by ``--config`` or ``APPLIANCE_CONFIG`` (flat keys);
3. ``APPLIANCE_<NAME>`` environment variables, e.g. ``APPLIANCE_DICOM_PORT``;
4. explicit overrides (command-line flags, tests).

A bad value stops start-up with a :class:`~appliance.errors.ConfigError`
whose message is one line that starts with the offending key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError

ENV_PREFIX = "APPLIANCE_"
CONFIG_ENV = "APPLIANCE_CONFIG"

Parser = Callable[[Any], Any]


def _parse_int(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {value!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number

    return parse


def _parse_port(value: Any) -> int:
    return _parse_int(1, 65535)(value)


def _parse_path(value: Any) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise ValueError(f"expected a folder path, got {value!r}")
    return Path(value).expanduser()


def _parse_optional_path(value: Any) -> Path | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _parse_path(value)


def _parse_host(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or " " in value.strip():
        raise ValueError(f"expected a host name or address, got {value!r}")
    return value.strip()


def parse_ae_title(value: Any) -> str:
    """Validate a DICOM Application Entity title (PS3.5 6.2, VR AE).

    Parameters
    ----------
    value : Any
        The candidate title.

    Returns
    -------
    str
        The title without leading or trailing spaces.

    Raises
    ------
    ValueError
        If it is empty, longer than 16 characters, or holds a backslash or a
        control character.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    title = value.strip()
    if not 1 <= len(title) <= 16:
        raise ValueError(f"an AE title has 1 to 16 characters, got {value!r}")
    if "\\" in title or any(ord(char) < 32 or ord(char) > 126 for char in title):
        raise ValueError(f"an AE title holds no backslash or control, got {value!r}")
    return title


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_log_level(value: Any) -> str:
    levels = ("DEBUG", "INFO", "WARNING", "ERROR")
    if not isinstance(value, str) or value.upper() not in levels:
        raise ValueError(f"expected one of {', '.join(levels)}, got {value!r}")
    return value.upper()


def _parse_clock(value: Any) -> str:
    text = str(value).strip() if isinstance(value, str) else ""
    hour, _, minute = text.partition(":")
    if not (hour.isdigit() and minute.isdigit() and len(minute) == 2):
        raise ValueError(f"expected a time of day as HH:MM, got {value!r}")
    if int(hour) > 23 or int(minute) > 59:
        raise ValueError(f"expected a time of day as HH:MM, got {value!r}")
    return f"{int(hour):02d}:{minute}"


def _parse_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return value.strip()


def _parse_ldap_url(value: Any) -> str:
    text = _parse_text(value)
    if text and not text.lower().startswith(("ldap://", "ldaps://")):
        raise ValueError(f"expected ldap://host or ldaps://host, got {value!r}")
    return text


def _parse_user_filter(value: Any) -> str:
    text = _parse_text(value)
    if not (text.startswith("(") and text.endswith(")")) or "{username}" not in text:
        raise ValueError(f"expected an LDAP filter with {{username}}, got {value!r}")
    return text


def _parse_networks(value: Any) -> tuple[str, ...]:
    # A TOML list, or a comma-separated string from the environment.
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"expected a list of addresses, got {value!r}")
    networks = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            networks.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ValueError(f"expected an address or network, got {item!r}") from None
    return tuple(networks)


def _setting(default: Any, help_text: str, parse: Parser) -> Any:
    return field(default=default, metadata={"help": help_text, "parse": parse})


@dataclass(frozen=True)
class Settings:
    """Validated settings of one appliance process."""

    data_dir: Path = _setting(
        Path("data"),
        "Folder for storage/, index.db and app.db; on the DICOM file system.",
        _parse_path,
    )
    ae_title: str = _setting(
        "APPLIANCE", "The appliance's own DICOM AE title.", parse_ae_title
    )
    dicom_host: str = _setting(
        "0.0.0.0", "Address the DICOM listener binds to.", _parse_host
    )
    dicom_port: int = _setting(
        11112, "TCP port of the DICOM listener (104 on a clinic server).", _parse_port
    )
    http_host: str = _setting(
        "127.0.0.1", "Address the web server binds to.", _parse_host
    )
    http_port: int = _setting(8080, "TCP port of the web server.", _parse_port)
    max_associations: int = _setting(
        20, "DICOM associations served at once.", _parse_int(1, 200)
    )
    network_timeout: int = _setting(
        60,
        "Seconds of silence before an association is dropped.",
        _parse_int(1, 3600),
    )
    shutdown_grace: int = _setting(
        30,
        "Seconds a stop waits for stores in flight to finish.",
        _parse_int(0, 3600),
    )
    log_level: str = _setting(
        "INFO", "DEBUG, INFO, WARNING or ERROR.", _parse_log_level
    )
    worklist_stale_days: int = _setting(
        3,
        "Worklist entries scheduled more than this many days ago drop off the list.",
        _parse_int(0, 365),
    )
    secure_cookies: bool = _setting(
        False,
        "Send the login cookie over HTTPS only; set it when behind an HTTPS proxy.",
        _parse_bool,
    )
    session_idle_minutes: int = _setting(
        15,
        "Minutes without a request after which a browser must log in again.",
        _parse_int(1, 24 * 60),
    )
    disk_warn_days: int = _setting(
        30,
        "Log a daily warning when the disk fills within this many days; 0: never.",
        _parse_int(0, 3650),
    )
    backup_dir: Path | None = _setting(
        None,
        "Folder (a mounted disk) that backups go to; unset: none.",
        _parse_optional_path,
    )
    backup_time: str = _setting(
        "02:30", "Local time of the nightly backup, HH:MM.", _parse_clock
    )
    keep_daily: int = _setting(
        7, "Backups kept: the newest of each of this many days.", _parse_int(0, 1000)
    )
    keep_weekly: int = _setting(
        4, "Backups kept: the newest of each of this many weeks.", _parse_int(0, 1000)
    )
    keep_monthly: int = _setting(
        12,
        "Backups kept: the newest of each of this many months.",
        _parse_int(0, 1000),
    )
    session_absolute_hours: int = _setting(
        12,
        "Hours after a login at which a browser must log in again, active or not.",
        _parse_int(1, 24 * 7),
    )
    login_max_failures: int = _setting(
        5,
        "Failed logins of one account that lock it for login_lock_minutes.",
        _parse_int(1, 100),
    )
    login_address_max_failures: int = _setting(
        20,
        "Failed logins from one address that lock the address likewise.",
        _parse_int(1, 1000),
    )
    login_lock_minutes: int = _setting(
        15, "How long a lock-out lasts.", _parse_int(1, 24 * 60)
    )
    login_backoff_seconds: int = _setting(
        1,
        "Wait after an account's failed login, doubled at each further one.",
        _parse_int(0, 60),
    )
    trusted_proxies: tuple[str, ...] = _setting(
        (),
        "Addresses of reverse proxies (nginx) whose X-Forwarded-For is believed.",
        _parse_networks,
    )
    ldap_url: str = _setting(
        "", "LDAP server, ldap://host or ldaps://host; empty: no LDAP.", _parse_ldap_url
    )
    ldap_start_tls: bool = _setting(
        False, "Use StartTLS on an ldap:// URL.", _parse_bool
    )
    ldap_ca_file: Path | None = _setting(
        None,
        "CA certificate(s) that sign the LDAP server's; unset: the system's.",
        _parse_optional_path,
    )
    ldap_bind_dn: str = _setting(
        "", "DN of the account that searches for users; empty: anonymous.", _parse_text
    )
    ldap_bind_password_file: Path | None = _setting(
        None,
        "File holding that account's password; readable by the service only.",
        _parse_optional_path,
    )
    ldap_user_base: str = _setting(
        "", "Where users are searched, e.g. ou=people,dc=example,dc=org.", _parse_text
    )
    ldap_user_filter: str = _setting(
        "(uid={username})",
        "Search filter; {username} is the typed name (sAMAccountName on AD).",
        _parse_user_filter,
    )
    ldap_admin_group: str = _setting(
        "", "DN of the group whose members are admins.", _parse_text
    )
    ldap_clinician_group: str = _setting(
        "", "DN of the group whose members are clinicians.", _parse_text
    )
    ldap_frontdesk_group: str = _setting(
        "", "DN of the group whose members are front desk.", _parse_text
    )
    ldap_timeout: int = _setting(
        10, "Seconds to wait for the LDAP server.", _parse_int(1, 120)
    )


def setting_names() -> list[str]:
    """Return the names of every setting, in table order."""
    return [item.name for item in dataclasses.fields(Settings)]


def describe_settings() -> list[tuple[str, Any, str]]:
    """Return (name, default, help) for every setting, for docs and ``--help``."""
    return [
        (item.name, item.default, item.metadata["help"])
        for item in dataclasses.fields(Settings)
    ]


def load_settings(
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from defaults, file, environment and overrides.

    Parameters
    ----------
    config_path : pathlib.Path, optional
        A TOML file; if None, ``APPLIANCE_CONFIG`` names it, if set.
    environ : Mapping, optional
        The environment to read ``APPLIANCE_*`` variables from; defaults to
        ``os.environ``.
    overrides : Mapping, optional
        Final values by setting name, e.g. from command-line flags.

    Returns
    -------
    Settings
        Every value parsed and validated.

    Raises
    ------
    ConfigError
        Naming the first bad key: unknown in the file, or an invalid value.
    """
    environ = os.environ if environ is None else environ
    fields = {item.name: item for item in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}

    # The file, whose keys must all be known: a typo must not pass silently.
    if config_path is None and environ.get(CONFIG_ENV):
        config_path = Path(environ[CONFIG_ENV])
    if config_path is not None:
        for key, raw in _read_toml(config_path).items():
            if key not in fields:
                raise ConfigError(f"{key}: unknown setting in {config_path}")
            values[key] = _parse(fields[key], raw, f"{key} (in {config_path})")

    # The environment, then explicit overrides.
    for name, item in fields.items():
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            values[name] = _parse(item, environ[env_name], env_name)
    for name, raw in (overrides or {}).items():
        if name not in fields:
            raise ConfigError(f"{name}: unknown setting")
        values[name] = _parse(fields[name], raw, name)

    return Settings(**values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{CONFIG_ENV}: no configuration file at {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from exc


def _parse(item: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    try:
        return item.metadata["parse"](raw)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
