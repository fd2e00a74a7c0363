"""installer/install.sh into a staging folder, and the staged appliance run.

The installer runs once per module with ``--root``: every path prefixed,
no packages, users or services touched (it lists those instead). The tests
then check each file it wrote, start the staged program as the unit would
(there is no systemd here), talk DICOM to it and HTTPS through a real nginx
with the staged site, upgrade in place, and uninstall.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import ssl
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, sample_file
from tests.dicom_helpers import echo, send_files
from tests.staging import (
    INSTALLER,
    REPO,
    NginxFront,
    NotifySocket,
    StagedServe,
    one_time_password,
    owner_of,
    run_installer,
    service_user_exists,
)
from tests.web_session import WebSession

pytestmark = pytest.mark.e2e

AE_TITLE = "TESTARCHIVE"
MODALITY = "PYNETDICOM"
BACKUP = "/srv/appliance-backup"
NEW_PASSWORD = "a new password for the test"


@dataclass
class Staged:
    """One staged installation and the ports it was given."""

    root: Path
    dicom_port: int
    http_port: int
    tls_port: int
    redirect_port: int
    output: str
    warnings: str
    admin_password: str

    def path(self, relative: str) -> Path:
        """A path inside the staging root, e.g. ``etc/appliance``."""
        return self.root / relative

    @property
    def program(self) -> Path:
        return self.path("opt/appliance")

    @property
    def config(self) -> Path:
        return self.path("etc/appliance/appliance.toml")

    @property
    def data(self) -> Path:
        return self.path("var/lib/appliance")


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Staged:
    """Install once per module into a fresh staging root."""
    root = tmp_path_factory.mktemp("stage")
    ports = {name: free_port() for name in ("dicom", "http", "tls", "redirect")}
    result = run_installer(
        root,
        *("--ae-title", AE_TITLE, "--dicom-port", str(ports["dicom"])),
        *("--http-port", str(ports["http"]), "--tls-port", str(ports["tls"])),
        *("--redirect-port", str(ports["redirect"])),
        *("--modality-ae", MODALITY, "--modality-host", "127.0.0.1"),
        *("--backup-dir", BACKUP),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    password = one_time_password(result.stdout)
    assert password, result.stdout
    return Staged(
        root=root,
        dicom_port=ports["dicom"],
        http_port=ports["http"],
        tls_port=ports["tls"],
        redirect_port=ports["redirect"],
        output=result.stdout,
        warnings=result.stderr,
        admin_password=password,
    )


@pytest.fixture
def notify_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotifySocket]:
    """A datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""
    listener = NotifySocket(tmp_path_factory.mktemp("notify") / "sock")
    yield listener
    listener.close()


def start_staged(staged: Staged, notify: NotifySocket) -> StagedServe:
    """Start the staged appliance with a watchdog, as systemd would."""
    serve = StagedServe(
        program=staged.program,
        config=staged.config,
        log_path=staged.root.parent / f"{staged.root.name}-serve.log",
        env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"},
    )
    serve.start()
    return serve


def test_installs_every_file_with_its_owner_and_mode(staged: Staged) -> None:
    # The service's files are root's too while there is no 'appliance' user.
    service = "appliance" if service_user_exists() else "root"
    expected = {
        "etc/appliance": (0o750, f"root:{service}"),
        "etc/appliance/appliance.toml": (0o640, f"root:{service}"),
        "etc/appliance/install.env": (0o644, "root:root"),
        "etc/appliance/tls": (0o750, "root:root"),
        "etc/appliance/tls/appliance.crt": (0o644, "root:root"),
        "etc/appliance/tls/appliance.key": (0o600, "root:root"),
        "etc/systemd/system/appliance.service": (0o644, "root:root"),
        "etc/systemd/system/appliance.service.d": (0o755, "root:root"),
        "etc/systemd/system/appliance.service.d/backup.conf": (0o644, "root:root"),
        "etc/nginx/sites-available/appliance.conf": (0o644, "root:root"),
        "var/lib/appliance": (0o750, f"{service}:{service}"),
        "var/lib/appliance/app.db": (0o640, f"{service}:{service}"),
        "opt/appliance": (0o755, "root:root"),
        "opt/appliance/bin/appliance": (0o755, "root:root"),
        "staged-actions.txt": (0o644, "root:root"),
    }
    for relative, (mode, owner) in expected.items():
        path = staged.path(relative)
        assert stat.S_IMODE(path.stat().st_mode) == mode, relative
        if os.geteuid() == 0:
            assert owner_of(path) == owner, relative

    link = staged.path("etc/nginx/sites-enabled/appliance.conf")
    assert os.readlink(link) == "../sites-available/appliance.conf"

    # Nothing else, but the program and what the program keeps in its data.
    written = {
        str(path.relative_to(staged.root))
        for path in staged.root.rglob("*")
        if not path.is_dir() or path.is_symlink()
    }
    written = {
        name
        for name in written
        if not name.startswith(("opt/appliance/", "var/lib/appliance/"))
    }
    files = {name for name in expected if not staged.path(name).is_dir()}
    assert written == files - {
        "opt/appliance/bin/appliance",
        "var/lib/appliance/app.db",
    } | {"etc/nginx/sites-enabled/appliance.conf"}


def test_the_program_is_root_owned_and_read_only_to_others(staged: Staged) -> None:
    writable = [
        path
        for path in staged.program.rglob("*")
        if not path.is_symlink() and path.stat().st_mode & 0o022
    ]
    assert writable == []
    assert (staged.program / "bin" / "python").exists()
    assert not (staged.program / "lib").is_symlink()


def test_writes_the_settings_it_was_given(staged: Staged) -> None:
    settings = tomllib.loads(staged.config.read_text())

    assert settings == {
        "data_dir": str(staged.data),
        "ae_title": AE_TITLE,
        "dicom_port": staged.dicom_port,
        "http_host": "127.0.0.1",
        "http_port": staged.http_port,
        "secure_cookies": True,
        "trusted_proxies": ["127.0.0.1", "::1"],
        "backup_dir": str(staged.root) + BACKUP,
    }
    dropin = staged.path("etc/systemd/system/appliance.service.d/backup.conf")
    assert f"ReadWritePaths=-{staged.root}{BACKUP}\n" in dropin.read_text()


def test_a_missing_backup_folder_on_the_data_disk_is_not_made(staged: Staged) -> None:
    # In the staging root it would be on the data disk: an unmounted backup
    # disk looks just like that, and backups must not land on the data disk.
    assert not staged.path(BACKUP.lstrip("/")).exists()
    assert f"the backup folder {staged.root}{BACKUP} does not exist" in " ".join(
        staged.warnings.split()
    )


def test_registers_the_modality_and_the_first_admin(staged: Staged) -> None:
    with sqlite3.connect(f"file:{staged.data / 'app.db'}?mode=ro", uri=True) as db:
        modalities = db.execute("SELECT ae_title, host FROM modalities").fetchall()
        users = db.execute(
            "SELECT name, role, must_change_password FROM users"
        ).fetchall()

    assert modalities == [(MODALITY, "127.0.0.1")]
    assert users == [("admin", "admin", 1)]
    assert "shown only now" in staged.output


def test_records_what_it_would_do_to_the_machine(staged: Staged) -> None:
    actions = staged.path("staged-actions.txt").read_text().splitlines()

    if not service_user_exists():
        assert any(line.startswith("useradd --system") for line in actions)
    assert "nginx -t " in actions
    assert "systemctl daemon-reload " in actions
    assert "systemctl enable --quiet appliance.service " in actions
    assert "systemctl restart appliance.service " in actions


def test_staged_unit_names_the_staged_paths_and_verifies(staged: Staged) -> None:
    unit = staged.path("etc/systemd/system/appliance.service")
    text = unit.read_text()

    assert (
        f"ExecStart={staged.program}/bin/appliance --config {staged.config} serve"
        in text
    )
    assert f"ReadWritePaths={staged.data}\n" in text
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_certificate_names_this_host_and_matches_its_key(staged: Staged) -> None:
    cert = staged.path("etc/appliance/tls/appliance.crt")
    key = staged.path("etc/appliance/tls/appliance.key")
    text = _openssl("x509", "-in", str(cert), "-noout", "-text")

    assert "IP Address:127.0.0.1" in text
    assert f"DNS:{os.uname().nodename}" in text
    assert _openssl("x509", "-in", str(cert), "-noout", "-pubkey") == _openssl(
        "pkey", "-in", str(key), "-pubout"
    )


def test_staged_appliance_serves_dicom_and_https(
    staged: Staged, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    serve = start_staged(staged, notify_socket)
    nginx = NginxFront(tmp_path / "nginx", [staged.path("etc/nginx/sites-enabled/*")])
    try:
        # systemd hears READY=1 only once DICOM answers, then watchdog pings.
        notify_socket.wait_for("READY=1")
        assert echo(staged.dicom_port, MODALITY, AE_TITLE) == 0x0000
        notify_socket.wait_for("WATCHDOG=1", timeout=10)

        # C-ECHO with DCMTK, C-STORE with pynetdicom, as the modality.
        echoscu = subprocess.run(
            ["echoscu", "-aet", MODALITY, "-aec", AE_TITLE]
            + ["127.0.0.1", str(staged.dicom_port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert echoscu.returncode == 0, echoscu.stderr
        statuses = send_files(
            staged.dicom_port, [sample_file("US1_UNCR.dcm")], called_ae=AE_TITLE
        )
        assert statuses == [0x0000]

        nginx.start([staged.tls_port, staged.redirect_port])
        _check_https(staged)
    finally:
        nginx.stop()
        code = serve.stop()

    assert code == 0, serve.log()
    assert notify_socket.wait_for("STOPPING=1", timeout=5)
    assert len(list((staged.data / "storage").rglob("*.dcm"))) == 1


def _check_https(staged: Staged) -> None:
    # The certificate is checked for real: trusted as given, for 127.0.0.1.
    context = ssl.create_default_context(
        cafile=str(staged.path("etc/appliance/tls/appliance.crt"))
    )
    base = f"https://127.0.0.1:{staged.tls_port}"
    browser = WebSession(base, context)

    health = browser.get("/healthz")
    assert health.status == 200 and '"ok":true' in health.text.replace(" ", "")

    plain = WebSession(f"http://127.0.0.1:{staged.redirect_port}")
    redirect = plain.get("/login?next=/")
    assert redirect.status == 301
    assert redirect.location == f"{base}/login?next=/"

    # The first admin logs in with the installer's password and must
    # choose a new one; the session cookie is for HTTPS only.
    response = browser.login("admin", staged.admin_password)
    assert response.status == 302 and response.location.endswith("/account/password")
    assert all(cookie.secure for cookie in browser.cookies)
    changed = browser.change_password(staged.admin_password, NEW_PASSWORD)
    assert changed.status == 302, changed.text[:500]
    assert browser.get("/").status == 200


def test_upgrade_keeps_settings_and_data(
    staged: Staged, notify_socket: NotifySocket
) -> None:
    before = _snapshot(staged.root)
    instances = _count_instances(staged.data)
    package = next(staged.program.glob("lib/python3*/site-packages/appliance"))
    installed_at = (package / "service.py").stat().st_mtime_ns

    result = run_installer(
        staged.root, "--ae-title", "OTHERTITLE", "--modality-ae", MODALITY
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "--ae-title ignored" in result.stderr
    assert "Upgraded in place" in result.stdout
    assert (package / "service.py").stat().st_mtime_ns > installed_at
    assert (package / "service.py").read_bytes() == (
        REPO / "appliance" / "service.py"
    ).read_bytes()
    assert one_time_password(result.stdout) is None
    after = _snapshot(staged.root)
    assert after.keys() == before.keys()
    changed = [name for name in before if before[name] != after[name]]
    assert changed == ["staged-actions.txt"]

    # The upgraded program starts on the kept data, migrations and all.
    serve = start_staged(staged, notify_socket)
    try:
        notify_socket.wait_for("READY=1")
        assert echo(staged.dicom_port, MODALITY, AE_TITLE) == 0x0000
    finally:
        assert serve.stop() == 0, serve.log()
    assert _count_instances(staged.data) == instances


def test_refuses_a_key_that_is_not_the_certificates(tmp_path: Path) -> None:
    for name in ("one", "two"):
        _openssl(
            "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={name}", "-days", "1",
            "-keyout", str(tmp_path / f"{name}.key"),
            "-out", str(tmp_path / f"{name}.crt"),
        )  # fmt: skip

    root = tmp_path / "root"
    result = run_installer(
        root, "--cert", str(tmp_path / "one.crt"), "--key", str(tmp_path / "two.key")
    )

    assert result.returncode == 1
    assert "do not belong together" in result.stderr
    assert not (root / "opt").exists()


def test_refuses_a_bad_ae_title_before_changing_anything(tmp_path: Path) -> None:
    result = run_installer(tmp_path / "root", "--ae-title", "BACK\\SLASH")

    assert result.returncode == 1
    assert result.stderr.startswith("install.sh: --ae-title:")
    assert list((tmp_path / "root").iterdir()) == []


def test_uninstall_removes_the_program_and_keeps_the_data(staged: Staged) -> None:
    kept = [
        staged.config,
        staged.path("etc/appliance/tls/appliance.key"),
        staged.data / "app.db",
        *(staged.data / "storage").rglob("*.dcm"),
    ]

    result = run_installer(staged.root, "--uninstall")

    assert result.returncode == 0, result.stderr
    assert "Kept:" in result.stdout
    for gone in (
        "opt/appliance",
        "etc/systemd/system/appliance.service",
        "etc/systemd/system/appliance.service.d",
        "etc/nginx/sites-available/appliance.conf",
        "etc/nginx/sites-enabled/appliance.conf",
    ):
        assert not os.path.lexists(staged.path(gone)), gone
    assert all(path.exists() for path in kept)
    actions = staged.path("staged-actions.txt").read_text()
    assert "systemctl disable --now --quiet appliance.service" in actions


def test_installer_scripts_pass_shellcheck() -> None:
    scripts = [INSTALLER, *sorted((REPO / "installer" / "lib").glob("*.sh"))]
    assert shutil.which("shellcheck"), "run installer/dev-setup.sh --test"

    result = subprocess.run(
        ["shellcheck", "-x", *map(str, scripts)],
        capture_output=True,
        text=True,
        cwd=REPO / "installer",
    )

    assert result.returncode == 0, result.stdout


def _snapshot(root: Path) -> dict[str, bytes]:
    # Every file but the program's, and the databases by their content.
    found: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if relative.startswith("opt/") or path.is_dir():
            continue
        if path.name.endswith((".db-wal", ".db-shm")):
            continue
        if path.suffix == ".db":
            found[relative] = _dump(path)
        elif path.is_symlink():
            found[relative] = os.readlink(path).encode()
        else:
            found[relative] = path.read_bytes()
    return found


def _dump(path: Path) -> bytes:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return "\n".join(db.iterdump()).encode()


def _count_instances(data: Path) -> int:
    if not (data / "index.db").exists():
        return 0
    with sqlite3.connect(f"file:{data / 'index.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM instances").fetchone()[0])


def _openssl(*args: str) -> str:
    result = subprocess.run(
        ["openssl", *args], capture_output=True, text=True, check=True
    )
    return result.stdout
