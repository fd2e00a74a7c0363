"""Checking a login against an LDAP directory (OpenLDAP, Active Directory).

A login is checked in three steps, each on a fresh connection (ldap3):

1. Bind as the service account (``ldap_bind_dn``, its password read from
   ``ldap_bind_password_file``; anonymously when no DN is set) and search
   ``ldap_user_base`` with ``ldap_user_filter``, in which ``{username}``
   is replaced by the typed name, escaped (RFC 4515) so that it can only
   ever be a value.
2. Bind as the entry found, with the typed password. An empty password is
   refused before anything is sent: LDAP would take it as an anonymous bind
   and answer "success".
3. Find the groups: the entry's ``memberOf`` values (Active Directory,
   OpenLDAP's memberof overlay), and every configured group whose entry
   lists the user as ``member``, ``uniqueMember`` or ``memberUid`` (also
   through nested groups on Active Directory). The highest role whose group
   holds the user wins: admin, then clinician, then front desk.

An account counts as disabled, and cannot log in, when the search does not
find exactly one entry (deleted, moved out of the base, or excluded by the
filter: on Active Directory add
``(!(userAccountControl:1.2.840.113556.1.4.803:=2))`` to it), when the entry
carries OpenLDAP's ``pwdAccountLockedTime`` (the ppolicy overlay's lock) or
Active Directory's ACCOUNTDISABLE flag, when the directory refuses its bind,
or when it is in none of the mapped groups.

TLS: ``ldaps://`` URLs, or ``ldap://`` with ``ldap_start_tls``. The server's
certificate is always verified, against ``ldap_ca_file`` when set, else the
system's CAs, and must name the host of the URL. A plain ``ldap://``
without StartTLS sends passwords in clear: only for a directory on the same
machine.
"""

from __future__ import annotations

import enum
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ldap3 import ANONYMOUS, BASE, NONE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from appliance.config import Settings
from appliance.errors import ConfigError
from appliance.state.users import Role

logger = logging.getLogger(__name__)

PLACEHOLDER = "{username}"
INVALID_CREDENTIALS = 49
NO_SUCH_OBJECT = 32
ACCOUNT_DISABLED = 0x2
IN_CHAIN = "1.2.840.113556.1.4.1941"
ENTRY_ATTRIBUTES = ["memberOf", "pwdAccountLockedTime", "userAccountControl"]


class DirectoryError(Exception):
    """The directory could not be asked: down, unreachable, or misconfigured."""


class Refusal(enum.Enum):
    """Why the directory did not let a user in (for the audit trail)."""

    NOT_FOUND = "not found in the directory"
    AMBIGUOUS = "more than one directory entry has this name"
    DISABLED = "disabled in the directory"
    WRONG_PASSWORD = "the directory refused the password"
    NO_ROLE = "in none of the directory groups that give a role"


@dataclass(frozen=True)
class DirectoryAccount:
    """A user the directory let in, with the role its groups give."""

    name: str
    dn: str
    role: Role


@dataclass(frozen=True)
class DirectoryConfig:
    """Where the directory is and how its users map to roles.

    ``group_roles`` lists (group DN, role) pairs, the highest role first.
    """

    url: str
    user_base: str
    user_filter: str
    group_roles: tuple[tuple[str, Role], ...]
    start_tls: bool = False
    ca_file: Path | None = None
    bind_dn: str = ""
    bind_password: str = field(default="", repr=False)
    timeout: float = 10.0

    @property
    def host(self) -> str:
        """The server's host name, as the URL gives it."""
        return urlsplit(self.url).hostname or ""


def directory_config(settings: Settings) -> DirectoryConfig | None:
    """Build the directory's configuration from the settings; None when off.

    Raises
    ------
    ConfigError
        Naming the setting that is missing or wrong.
    """
    if not settings.ldap_url:
        return None
    if not settings.ldap_user_base:
        raise ConfigError("ldap_user_base: must be set when ldap_url is set")
    if settings.ldap_start_tls and settings.ldap_url.startswith("ldaps:"):
        raise ConfigError("ldap_start_tls: not with an ldaps:// URL (already TLS)")
    if settings.ldap_ca_file is not None and not settings.ldap_ca_file.is_file():
        raise ConfigError(f"ldap_ca_file: no file at {settings.ldap_ca_file}")

    pairs = (
        (settings.ldap_admin_group, Role.ADMIN),
        (settings.ldap_clinician_group, Role.CLINICIAN),
        (settings.ldap_frontdesk_group, Role.FRONTDESK),
    )
    group_roles = tuple((dn, role) for dn, role in pairs if dn)
    if not group_roles:
        raise ConfigError(
            "ldap_admin_group: set at least one of ldap_admin_group,"
            " ldap_clinician_group and ldap_frontdesk_group"
        )
    return DirectoryConfig(
        url=settings.ldap_url,
        user_base=settings.ldap_user_base,
        user_filter=settings.ldap_user_filter,
        group_roles=group_roles,
        start_tls=settings.ldap_start_tls,
        ca_file=settings.ldap_ca_file,
        bind_dn=settings.ldap_bind_dn,
        bind_password=_bind_password(settings),
        timeout=float(settings.ldap_timeout),
    )


def _bind_password(settings: Settings) -> str:
    path = settings.ldap_bind_password_file
    if not settings.ldap_bind_dn:
        return ""
    if path is None:
        raise ConfigError("ldap_bind_password_file: must be set with ldap_bind_dn")
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(
            f"ldap_bind_password_file: cannot read {path}: {exc}"
        ) from exc


class Directory:
    """One configured directory; each check opens its own connections.

    Parameters
    ----------
    config : DirectoryConfig
        Validated, e.g. by :func:`directory_config`.
    """

    def __init__(self, config: DirectoryConfig) -> None:
        self.config = config

    def authenticate(self, name: str, password: str) -> DirectoryAccount | Refusal:
        """Check a name and password; find the role.

        Returns
        -------
        DirectoryAccount or Refusal
            The account, or why it may not log in.

        Raises
        ------
        DirectoryError
            If the directory cannot be reached or refuses the service bind.
        """
        if not password:
            return Refusal.WRONG_PASSWORD
        try:
            return self._authenticate(name, password)
        except LDAPException as exc:
            raise DirectoryError(f"{self.config.url}: {exc}") from exc

    def _authenticate(self, name: str, password: str) -> DirectoryAccount | Refusal:
        service = self._bound(self.config.bind_dn, self.config.bind_password)
        try:
            found = self._find(service, name)
            if isinstance(found, Refusal):
                return found
            dn, attributes = found
            if _is_disabled(attributes):
                return Refusal.DISABLED
            if not self._password_matches(dn, password):
                return Refusal.WRONG_PASSWORD
            groups = self._groups(service, dn, name, attributes)
        finally:
            service.unbind()

        for group, role in self.config.group_roles:
            if _normal_dn(group) in groups:
                return DirectoryAccount(name, dn, role)
        return Refusal.NO_ROLE

    def _find(
        self, service: Connection, name: str
    ) -> tuple[str, dict[str, Any]] | Refusal:
        query = self.config.user_filter.replace(PLACEHOLDER, escape_filter_chars(name))
        service.search(
            self.config.user_base,
            query,
            search_scope=SUBTREE,
            attributes=ENTRY_ATTRIBUTES,
            size_limit=2,
            time_limit=int(self.config.timeout),
        )
        entries = _entries(service)
        if not entries:
            if service.result["result"] == NO_SUCH_OBJECT:
                logger.warning(
                    "The directory has no %s, or the search account may not read it",
                    self.config.user_base,
                )
            return Refusal.NOT_FOUND
        if len(entries) > 1:
            return Refusal.AMBIGUOUS
        return entries[0]["dn"], dict(entries[0]["attributes"])

    def _password_matches(self, dn: str, password: str) -> bool:
        connection = self._connection(dn, password)
        try:
            if connection.bind():
                return True
            if connection.result["result"] == INVALID_CREDENTIALS:
                return False
            raise DirectoryError(
                f"{self.config.url}: the bind was refused:"
                f" {connection.result['description']}"
            )
        finally:
            connection.unbind()

    def _groups(
        self,
        service: Connection,
        dn: str,
        name: str,
        attributes: dict[str, Any],
    ) -> set[str]:
        groups = {_normal_dn(value) for value in _values(attributes, "memberOf")}
        escaped_dn, escaped_name = escape_filter_chars(dn), escape_filter_chars(name)
        query = (
            f"(|(member={escaped_dn})(uniqueMember={escaped_dn})"
            f"(memberUid={escaped_name})(member:{IN_CHAIN}:={escaped_dn}))"
        )
        for group, _role in self.config.group_roles:
            service.search(group, query, search_scope=BASE, attributes=["1.1"])
            if _entries(service):
                groups.add(_normal_dn(group))
            elif service.result["result"] == NO_SUCH_OBJECT:
                logger.warning("The directory has no group %s", group)
        return groups

    def _bound(self, dn: str, password: str) -> Connection:
        connection = self._connection(dn, password)
        if not connection.bind():
            description = connection.result["description"]
            connection.unbind()
            raise DirectoryError(
                f"{self.config.url}: the service account's bind was refused:"
                f" {description}"
            )
        return connection

    def _connection(self, dn: str, password: str) -> Connection:
        # Opened (and StartTLS done) before any password is sent.
        connection = Connection(
            self._server(),
            user=dn or None,
            password=password or None,
            authentication=SIMPLE if dn else ANONYMOUS,
            read_only=True,
            receive_timeout=self.config.timeout,
            raise_exceptions=False,
        )
        connection.open()
        if self.config.start_tls:
            connection.start_tls()
        return connection

    def _server(self) -> Server:
        config = self.config
        tls = Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=str(config.ca_file) if config.ca_file else None,
            sni=config.host or None,
        )
        return Server(
            config.url,
            use_ssl=config.url.lower().startswith("ldaps:"),
            tls=tls,
            get_info=NONE,
            connect_timeout=config.timeout,
        )


def _entries(connection: Connection) -> list[dict[str, Any]]:
    return [
        item
        for item in connection.response or []
        if item.get("type") == "searchResEntry"
    ]


def _is_disabled(attributes: dict[str, Any]) -> bool:
    if _values(attributes, "pwdAccountLockedTime"):
        return True
    for value in _values(attributes, "userAccountControl"):
        try:
            if int(value) & ACCOUNT_DISABLED:
                return True
        except (TypeError, ValueError):
            continue
    return False


def _values(attributes: dict[str, Any], name: str) -> list[Any]:
    for key, value in attributes.items():
        if key.lower() == name.lower():
            if isinstance(value, list | tuple):
                return list(value)
            return [] if value in (None, "", b"") else [value]
    return []


def _normal_dn(dn: str) -> str:
    # Attribute names and values compared without regard to case or spaces
    # around separators: "CN=Admins, OU=Groups" is "cn=admins,ou=groups".
    try:
        parts = parse_dn(dn)
    except LDAPException:
        return dn.strip().lower()
    return ",".join(f"{attr.lower()}={value.lower()}" for attr, value, _sep in parts)
