"""A real OpenLDAP directory (Debian's ``slapd``) for the LDAP tests.

:func:`start_slapd` writes a ``slapd.conf`` (mdb database, the ppolicy
overlay so that a locked account is refused as on a real server, TLS with a
self-signed certificate made by ``openssl``), starts ``slapd`` in the
foreground on free loopback ports (``ldap://`` with StartTLS, ``ldaps://``,
and a second ``ldaps://`` on 127.0.0.2 whose name the certificate does not
carry), and fills it with ``ldapadd``. :meth:`Slapd.stop` ends it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port

BASE = "dc=example,dc=org"
ROOT_DN = f"cn=root,{BASE}"
ROOT_PASSWORD = "root secret 42"
READER_DN = f"cn=reader,{BASE}"
READER_PASSWORD = "reader secret 42"
PEOPLE = f"ou=people,{BASE}"
GROUPS = f"ou=groups,{BASE}"
ADMINS = f"cn=admins,{GROUPS}"
CLINICIANS = f"cn=clinicians,{GROUPS}"
FRONTDESK = f"cn=frontdesk,{GROUPS}"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
# ppolicy's own mark of a permanently locked account.
LOCKED_FOREVER = "000001010000Z"

_CONFIG = """\
{includes}
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload ppolicy
pidfile {folder}/slapd.pid
TLSCertificateFile {folder}/cert.pem
TLSCertificateKeyFile {folder}/key.pem

database mdb
maxsize 16777216
suffix "{base}"
rootdn "{root_dn}"
rootpw "{root_password}"
directory {folder}/db
overlay ppolicy
ppolicy_default "cn=default,ou=policies,{base}"
access to attrs=userPassword
    by self =w
    by anonymous auth
    by * none
access to *
    by users read
    by * none
"""

_BASE_LDIF = f"""\
dn: {BASE}
objectClass: dcObject
objectClass: organization
o: Example practice
dc: example

dn: cn=reader,{BASE}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: reader
userPassword: {READER_PASSWORD}

dn: ou=policies,{BASE}
objectClass: organizationalUnit
ou: policies

dn: cn=default,ou=policies,{BASE}
objectClass: pwdPolicy
objectClass: device
cn: default
pwdAttribute: userPassword
pwdLockout: TRUE

dn: {PEOPLE}
objectClass: organizationalUnit
ou: people

dn: {GROUPS}
objectClass: organizationalUnit
ou: groups

dn: {ADMINS}
objectClass: groupOfNames
cn: admins
member: {ROOT_DN}

dn: {CLINICIANS}
objectClass: groupOfUniqueNames
cn: clinicians
uniqueMember: {ROOT_DN}

dn: {FRONTDESK}
objectClass: posixGroup
cn: frontdesk
gidNumber: 5000
"""


@dataclass
class Slapd:
    """A running ``slapd`` and how to reach and fill it."""

    folder: Path
    port: int
    tls_port: int
    wrong_name_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Plain LDAP (use StartTLS to protect it)."""
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        """LDAP over TLS, at a name the certificate carries."""
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def wrong_name_url(self) -> str:
        """LDAP over TLS at 127.0.0.2, a name the certificate does not carry."""
        return f"ldaps://127.0.0.2:{self.wrong_name_port}"

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate, which is its own CA."""
        return self.folder / "cert.pem"

    def add(self, ldif: str) -> None:
        """Add entries (``ldapadd``)."""
        self._tool("ldapadd", ldif)

    def modify(self, ldif: str) -> None:
        """Change entries (``ldapmodify``)."""
        self._tool("ldapmodify", ldif)

    def delete(self, dn: str) -> None:
        """Delete one entry (``ldapdelete``)."""
        self._tool("ldapdelete", "", dn)

    def add_user(self, uid: str, password: str, *groups: str) -> str:
        """Add a person and put them in `groups`; return the DN."""
        dn = f"uid={uid},{PEOPLE}"
        self.add(
            f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n"
            f"sn: {uid}\nuserPassword: {password}\n"
        )
        for group in groups:
            self.join(group, uid)
        return dn

    def join(self, group: str, uid: str) -> None:
        """Put a user in a group, the way that group's class lists members."""
        self._membership(group, uid, "add")

    def leave(self, group: str, uid: str) -> None:
        """Take a user out of a group."""
        self._membership(group, uid, "delete")

    def _membership(self, group: str, uid: str, change: str) -> None:
        attribute, value = {
            ADMINS: ("member", f"uid={uid},{PEOPLE}"),
            CLINICIANS: ("uniqueMember", f"uid={uid},{PEOPLE}"),
            FRONTDESK: ("memberUid", uid),
        }[group]
        self.modify(
            f"dn: {group}\nchangetype: modify\n{change}: {attribute}\n"
            f"{attribute}: {value}\n"
        )

    def lock(self, uid: str) -> None:
        """Lock an account the way OpenLDAP's password policy does."""
        self.modify(
            f"dn: uid={uid},{PEOPLE}\nchangetype: modify\n"
            f"add: pwdAccountLockedTime\npwdAccountLockedTime: {LOCKED_FOREVER}\n"
        )

    def can_bind(self, dn: str, password: str) -> bool:
        """Ask ``ldapwhoami`` whether the server itself accepts this bind."""
        result = subprocess.run(
            ["ldapwhoami", "-x", "-H", self.url, "-D", dn, "-w", password],
            capture_output=True,
            timeout=30,
        )
        return result.returncode == 0

    def stop(self) -> None:
        """End the server and wait for it."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def log(self) -> str:
        """What slapd wrote."""
        return (self.folder / "slapd.log").read_text(errors="replace")

    def _tool(self, tool: str, ldif: str, *args: str) -> None:
        command = [tool, "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD]
        result = subprocess.run(
            [*command, *args], input=ldif.encode(), capture_output=True, timeout=30
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed: {result.stderr.decode(errors='replace')}"
            )


def start_slapd(folder: Path) -> Slapd:
    """Configure, start and fill a directory in `folder`; wait until it answers."""
    binary = shutil.which("slapd") or "/usr/sbin/slapd"
    assert Path(binary).exists(), "slapd missing; run installer/dev-setup.sh --test"
    assert shutil.which("ldapadd"), (
        "ldap-utils missing; run installer/dev-setup.sh --test"
    )
    (folder / "db").mkdir(parents=True)
    _make_certificate(folder)
    includes = "\n".join(f"include /etc/ldap/schema/{name}.schema" for name in SCHEMAS)
    (folder / "slapd.conf").write_text(
        _CONFIG.format(
            includes=includes,
            folder=folder,
            base=BASE,
            root_dn=ROOT_DN,
            root_password=ROOT_PASSWORD,
        )
    )

    server = Slapd(folder, free_port(), free_port(), free_port())
    listeners = f"{server.url}/ {server.ldaps_url}/ {server.wrong_name_url}/"
    with (folder / "slapd.log").open("wb") as log:
        server.process = subprocess.Popen(
            [binary, "-d", "0", "-h", listeners, "-f", str(folder / "slapd.conf")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(server)
        server.add(_BASE_LDIF)
    except BaseException:
        server.stop()
        raise
    return server


def _make_certificate(folder: Path) -> None:
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
            "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip


def _wait_ready(server: Slapd, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"slapd exited early:\n{server.log()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"slapd did not answer in {timeout} s:\n{server.log()}")
