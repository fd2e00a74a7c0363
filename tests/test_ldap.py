"""LDAP logins against a real OpenLDAP server (slapd) that the tests run.

The directory holds people and three groups of three kinds (groupOfNames,
groupOfUniqueNames, posixGroup) mapped to the three roles. Each test makes
users of its own, so tests do not depend on each other's changes.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.auth.ldap import (
    Directory,
    DirectoryAccount,
    DirectoryConfig,
    DirectoryError,
    Refusal,
    directory_config,
)
from appliance.auth.login import LoginPolicy, Outcome, attempt_login
from appliance.config import load_settings
from appliance.errors import ConfigError
from appliance.state import open_state, sessions
from appliance.state.users import Role, add_user, get_user_by_name, set_disabled
from tests.conftest import free_port
from tests.ldap_server import (
    ADMINS,
    CLINICIANS,
    FRONTDESK,
    PEOPLE,
    READER_DN,
    READER_PASSWORD,
    Slapd,
    start_slapd,
)

PASSWORD = "directory password 7"
ADDRESS = "192.0.2.10"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    yield server
    server.stop()


@pytest.fixture
def config(slapd: Slapd) -> DirectoryConfig:
    """StartTLS on the plain port, the service account, three groups."""
    return DirectoryConfig(
        url=slapd.url,
        start_tls=True,
        ca_file=slapd.ca_file,
        bind_dn=READER_DN,
        bind_password=READER_PASSWORD,
        user_base=PEOPLE,
        user_filter="(&(objectClass=inetOrgPerson)(uid={username}))",
        group_roles=(
            (ADMINS, Role.ADMIN),
            (CLINICIANS, Role.CLINICIAN),
            (FRONTDESK, Role.FRONTDESK),
        ),
        timeout=5,
    )


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    with closing(open_state(tmp_path / "app.db")) as opened:
        yield opened


def person(slapd: Slapd, *groups: str) -> str:
    """Add a directory user of this test's own, in `groups`; return the name."""
    uid = f"p{uuid.uuid4().hex[:8]}"
    slapd.add_user(uid, PASSWORD, *groups)
    return uid


def login(conn: sqlite3.Connection, config: DirectoryConfig | None, name: str,
          password: str = PASSWORD, now: float = 1000.0) -> object:  # fmt: skip
    return attempt_login(
        conn, name, password, ADDRESS, now, LoginPolicy(directory=config)
    )


# The directory alone.


@pytest.mark.parametrize(
    ("group", "role"),
    [(ADMINS, Role.ADMIN), (CLINICIANS, Role.CLINICIAN), (FRONTDESK, Role.FRONTDESK)],
)
def test_each_kind_of_group_gives_its_role(
    slapd: Slapd, config: DirectoryConfig, group: str, role: Role
) -> None:
    name = person(slapd, group)
    account = Directory(config).authenticate(name, PASSWORD)
    assert account == DirectoryAccount(name, f"uid={name},{PEOPLE}", role)


def test_the_highest_role_wins(slapd: Slapd, config: DirectoryConfig) -> None:
    name = person(slapd, FRONTDESK, CLINICIANS)
    account = Directory(config).authenticate(name, PASSWORD)
    assert isinstance(account, DirectoryAccount) and account.role is Role.CLINICIAN


def test_wrong_empty_and_unknown(slapd: Slapd, config: DirectoryConfig) -> None:
    name = person(slapd, CLINICIANS)
    directory = Directory(config)
    assert directory.authenticate(name, "not the password") is Refusal.WRONG_PASSWORD
    assert directory.authenticate(name, "") is Refusal.WRONG_PASSWORD
    assert directory.authenticate("nobody-here", PASSWORD) is Refusal.NOT_FOUND


def test_the_typed_name_cannot_change_the_filter(
    slapd: Slapd, config: DirectoryConfig
) -> None:
    person(slapd, ADMINS)
    directory = Directory(config)
    for name in ("*", "p*", "x)(uid=*", "*)(|(uid=*"):
        assert directory.authenticate(name, PASSWORD) is Refusal.NOT_FOUND, name


def test_a_user_in_no_mapped_group_is_refused(
    slapd: Slapd, config: DirectoryConfig
) -> None:
    name = person(slapd)
    assert Directory(config).authenticate(name, PASSWORD) is Refusal.NO_ROLE


def test_a_locked_account_is_disabled(slapd: Slapd, config: DirectoryConfig) -> None:
    name = person(slapd, ADMINS)
    slapd.lock(name)
    # The server itself refuses the bind (ppolicy), and we say why.
    assert not slapd.can_bind(f"uid={name},{PEOPLE}", PASSWORD)
    assert Directory(config).authenticate(name, PASSWORD) is Refusal.DISABLED


def test_ldaps_with_the_right_ca(slapd: Slapd, config: DirectoryConfig) -> None:
    name = person(slapd, CLINICIANS)
    ldaps = replace(config, url=slapd.ldaps_url, start_tls=False)
    account = Directory(ldaps).authenticate(name, PASSWORD)
    assert isinstance(account, DirectoryAccount)


def test_tls_refuses_an_unknown_certificate_or_name(
    slapd: Slapd, config: DirectoryConfig, tmp_path: Path
) -> None:
    name = person(slapd, CLINICIANS)
    other_ca = tmp_path / "other-ca.pem"
    _other_certificate(other_ca)
    for broken in (
        replace(config, url=slapd.ldaps_url, start_tls=False, ca_file=other_ca),
        replace(config, ca_file=other_ca),
        replace(config, url=slapd.wrong_name_url, start_tls=False),
    ):
        with pytest.raises(DirectoryError):
            Directory(broken).authenticate(name, PASSWORD)


def test_a_wrong_service_password_or_no_server_is_an_error(
    config: DirectoryConfig,
) -> None:
    with pytest.raises(DirectoryError, match="service account"):
        Directory(replace(config, bind_password="wrong")).authenticate("x", "y")
    down = replace(config, url=f"ldap://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(DirectoryError):
        Directory(down).authenticate("x", "y")


# Logging in: local accounts first, then the directory, with a local row.


def test_a_directory_user_gets_a_local_row(
    slapd: Slapd, config: DirectoryConfig, conn: sqlite3.Connection
) -> None:
    name = person(slapd, FRONTDESK)
    result = login(conn, config, name)
    assert result.outcome is Outcome.OK  # type: ignore[attr-defined]
    user = get_user_by_name(conn, name)
    assert user is not None and not user.is_local and user.role is Role.FRONTDESK
    assert user.last_login_at is not None
    stored = conn.execute(
        "SELECT password_hash, directory_dn FROM users WHERE name = ?", (name,)
    ).fetchone()
    assert stored["password_hash"] == ""
    assert stored["directory_dn"] == f"uid={name},{PEOPLE}"


def test_the_role_is_refreshed_at_every_login(
    slapd: Slapd, config: DirectoryConfig, conn: sqlite3.Connection
) -> None:
    name = person(slapd, FRONTDESK)
    login(conn, config, name)
    slapd.join(ADMINS, name)
    login(conn, config, name)
    assert get_user_by_name(conn, name).role is Role.ADMIN  # type: ignore[union-attr]
    slapd.leave(ADMINS, name)
    login(conn, config, name)
    assert get_user_by_name(conn, name).role is Role.FRONTDESK  # type: ignore[union-attr]


def test_a_local_account_is_never_checked_in_the_directory(
    slapd: Slapd, config: DirectoryConfig, conn: sqlite3.Connection
) -> None:
    name = person(slapd, ADMINS)
    add_user(conn, name, Role.FRONTDESK, "the local password")
    refused = login(conn, config, name)
    assert refused.outcome is Outcome.REFUSED  # type: ignore[attr-defined]
    ok = login(conn, config, name, "the local password", now=5000.0)
    assert ok.user.role is Role.FRONTDESK and ok.user.is_local  # type: ignore[attr-defined]


def test_the_local_admin_gets_in_while_the_directory_is_down(
    slapd: Slapd, config: DirectoryConfig, conn: sqlite3.Connection
) -> None:
    name = person(slapd, CLINICIANS)
    add_user(conn, "localadmin", Role.ADMIN, "the local password")
    down = replace(config, url=f"ldap://127.0.0.1:{free_port()}", timeout=2)

    result = login(conn, down, name)
    assert result.outcome is Outcome.DIRECTORY_DOWN  # type: ignore[attr-defined]
    ok = login(conn, down, "localadmin", "the local password")
    assert ok.outcome is Outcome.OK  # type: ignore[attr-defined]
    # "Down" is nobody's wrong password: it does not count towards a lock.
    assert conn.execute("SELECT count(*) FROM login_failures").fetchone()[0] == 0


@pytest.mark.parametrize("how", ["deleted", "locked", "out-of-groups"])
def test_a_disabled_directory_account_cannot_log_in(
    slapd: Slapd, config: DirectoryConfig, conn: sqlite3.Connection, how: str
) -> None:
    name = person(slapd, CLINICIANS)
    first = login(conn, config, name)
    user = first.user  # type: ignore[attr-defined]
    sessions.start_session(conn, user.id, 1000.0)

    if how == "deleted":
        slapd.delete(f"uid={name},{PEOPLE}")
    elif how == "locked":
        slapd.lock(name)
    else:
        slapd.leave(CLINICIANS, name)
    result = login(conn, config, name, now=2000.0)
    assert result.outcome is Outcome.REFUSED  # type: ignore[attr-defined]
    assert result.detail.startswith("directory: ")  # type: ignore[attr-defined]
    # Its open sessions end with it.
    assert not [s for s in sessions.list_sessions(conn) if s.user_id == user.id]


def test_an_admin_can_disable_a_directory_account_here(
    slapd: Slapd, config: DirectoryConfig, conn: sqlite3.Connection
) -> None:
    name = person(slapd, CLINICIANS)
    login(conn, config, name)
    set_disabled(conn, name, True)
    result = login(conn, config, name, now=2000.0)
    assert result.outcome is Outcome.REFUSED  # type: ignore[attr-defined]
    assert "disabled here" in result.detail  # type: ignore[attr-defined]


# The settings.


def test_settings_build_the_directory(slapd: Slapd, tmp_path: Path) -> None:
    secret = tmp_path / "bind-password"
    secret.write_text(READER_PASSWORD + "\n")
    settings = load_settings(
        environ={},
        overrides={
            "ldap_url": slapd.ldaps_url,
            "ldap_ca_file": str(slapd.ca_file),
            "ldap_bind_dn": READER_DN,
            "ldap_bind_password_file": str(secret),
            "ldap_user_base": PEOPLE,
            "ldap_clinician_group": CLINICIANS,
        },
    )
    config = directory_config(settings)
    assert config is not None and config.bind_password == READER_PASSWORD
    assert config.group_roles == ((CLINICIANS, Role.CLINICIAN),)
    assert READER_PASSWORD not in repr(config)
    assert directory_config(load_settings(environ={})) is None


@pytest.mark.parametrize(
    ("overrides", "bad_key"),
    [
        ({"ldap_user_filter": "uid={username}"}, "ldap_user_filter"),
        ({"ldap_user_filter": "(uid=%s)"}, "ldap_user_filter"),
        ({"ldap_url": "http://example.org"}, "ldap_url"),
    ],
)
def test_bad_ldap_values_name_their_key(
    overrides: dict[str, str], bad_key: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{bad_key}"):
        load_settings(environ={}, overrides=overrides)


@pytest.mark.parametrize(
    ("overrides", "bad_key"),
    [
        ({"ldap_admin_group": ADMINS}, "ldap_user_base"),
        ({"ldap_user_base": PEOPLE}, "ldap_admin_group"),
        (
            {"ldap_user_base": PEOPLE, "ldap_admin_group": ADMINS, "ldap_bind_dn": "x"},
            "ldap_bind_password_file",
        ),
        (
            {
                "ldap_user_base": PEOPLE,
                "ldap_admin_group": ADMINS,
                "ldap_start_tls": "true",
                "ldap_url": "ldaps://127.0.0.1",
            },
            "ldap_start_tls",
        ),
    ],
)
def test_incomplete_ldap_settings_name_their_key(
    overrides: dict[str, str], bad_key: str
) -> None:
    settings = load_settings(
        environ={}, overrides={"ldap_url": "ldap://127.0.0.1", **overrides}
    )
    with pytest.raises(ConfigError, match=f"^{bad_key}"):
        directory_config(settings)


def _other_certificate(path: Path) -> None:
    import subprocess

    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(path.with_suffix(".key")), "-out", str(path),
            "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
