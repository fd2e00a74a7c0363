"""systemd/appliance.service: what it declares, systemd's own checks of it,
and the appliance running under its capability and system call rules.

There is no systemd as PID 1 here, so the rules are applied the way systemd
applies them: the capability bounding set by setpriv(1), and the seccomp
filters of MemoryDenyWriteExecute= and SystemCallFilter= by
tests/seccomp_exec.py.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, make_appliance, sample_file
from tests.dicom_helpers import echo, send_files
from tests.web_session import WebSession

UNIT = REPO / "systemd" / "appliance.service"
SYSTEM_PYTHON = "/usr/bin/python3"
CAP_NET_BIND_SERVICE = 1 << 10
_ONE_TIME = re.compile(r"one-time password\s+(\S+)")


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Every ``key=value`` of a unit file, by section; repeated keys in order."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[section][key].append(value)
    return sections


def service() -> dict[str, list[str]]:
    """The unit's [Service] section."""
    return read_unit(UNIT)["Service"]


def test_starts_the_installed_program_as_a_notify_service() -> None:
    settings = service()

    assert settings["Type"] == ["notify"]
    assert settings["ExecStart"] == [
        "/opt/appliance/bin/appliance --config /etc/appliance/appliance.toml serve"
    ]
    assert int(settings["WatchdogSec"][0]) > 0
    assert settings["Restart"] == ["on-failure"]
    assert settings["User"] == ["appliance"]
    assert read_unit(UNIT)["Install"]["WantedBy"] == ["multi-user.target"]


def test_may_bind_port_104_and_nothing_more() -> None:
    settings = service()

    assert settings["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["NoNewPrivileges"] == ["yes"]


def test_is_hardened() -> None:
    settings = service()

    for key in (
        "PrivateTmp",
        "ProtectHome",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RestrictSUIDSGID",
        "RestrictRealtime",
    ):
        assert settings[key] == ["yes"], key
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["ReadWritePaths"] == ["/var/lib/appliance"]
    assert settings["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert settings["SystemCallArchitectures"] == ["native"]
    assert settings["SystemCallFilter"][0] == "@system-service"
    assert settings["UMask"] == ["0027"]


@pytest.fixture
def runnable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart at this checkout's program, which exists.

    systemd-analyze fails a unit whose program is missing.
    """
    unit = tmp_path / "appliance.service"
    unit.write_text(
        UNIT.read_text().replace("/opt/appliance/bin/appliance", str(BIN / "appliance"))
    )
    return unit


def test_passes_systemd_analyze_verify(runnable_unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(runnable_unit)],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_systemd_rates_its_exposure_low(runnable_unit: Path) -> None:
    # The threshold is in tenths: 20 means an exposure of 2.0 ("OK") at most.
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=20"]
        + [str(runnable_unit)],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def allowed_system_calls() -> list[str]:
    """The calls the unit's SystemCallFilter= lines allow, groups expanded."""
    groups = _system_call_groups()
    allowed: set[str] = set()
    for line in service()["SystemCallFilter"]:
        deny = line.startswith("~")
        for name in line.lstrip("~").split():
            calls = _expand(name, groups)
            allowed = allowed - calls if deny else allowed | calls
    return sorted(allowed)


def _system_call_groups() -> dict[str, list[str]]:
    # `systemd-analyze syscall-filter` lists each @group, then its members
    # indented, comments starting with '#'.
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in listing.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith(" ") and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def _expand(name: str, groups: dict[str, list[str]]) -> set[str]:
    if not name.startswith("@"):
        return {name}
    return set().union(*(_expand(member, groups) for member in groups[name]))


def test_the_filter_allows_what_a_service_needs_and_not_more() -> None:
    calls = allowed_system_calls()

    for needed in ("openat", "read", "write", "fsync", "rename", "socket", "bind"):
        assert needed in calls
    for refused in ("mount", "reboot", "init_module", "chown", "setuid", "ptrace"):
        assert refused not in calls


def free_privileged_port() -> int:
    """A port below 1024 that nothing listens on: binding it needs the cap."""
    for port in range(900, 1024):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 1024")


def test_the_emulated_filters_refuse_what_the_unit_refuses(tmp_path: Path) -> None:
    _require_tools()
    allowed = tmp_path / "allowed-calls"
    allowed.write_text("\n".join(allowed_system_calls()) + "\n")
    probe = (
        "import mmap, os\n"
        "for name, attempt in (\n"
        "    ('chown', lambda: os.chown('.', os.getuid(), os.getgid())),\n"
        "    ('wx-map', lambda: mmap.mmap(-1, 4096, prot=7)),\n"
        "):\n"
        "    try:\n"
        "        attempt()\n"
        "        print(name, 'allowed')\n"
        "    except PermissionError:\n"
        "        print(name, 'refused')\n"
    )

    result = subprocess.run(
        [SYSTEM_PYTHON, str(REPO / "tests" / "seccomp_exec.py"), str(allowed), "--"]
        + [str(BIN / "python"), "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )

    assert result.stdout.split("\n")[:2] == ["chown refused", "wx-map refused"], (
        result.stdout + result.stderr
    )


def _require_tools() -> None:
    missing = [tool for tool in ("setpriv",) if not shutil.which(tool)]
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], check=False)
    if probe.returncode:
        missing.append("python3-seccomp")
    assert not missing, f"{missing} missing: run installer/dev-setup.sh --test"


@pytest.mark.e2e
def test_runs_under_the_units_capability_and_system_call_rules(
    tmp_path: Path, dcmtk: None
) -> None:
    _require_tools()
    if not _running_as_root():
        pytest.skip("dropping to one capability needs root, as CI has")

    allowed = tmp_path / "allowed-calls"
    allowed.write_text("\n".join(allowed_system_calls()) + "\n")
    port = free_privileged_port()
    appliance = make_appliance(
        tmp_path / "data",
        {"APPLIANCE_DICOM_PORT": str(port), "APPLIANCE_DICOM_HOST": "127.0.0.1"},
    )
    appliance.dicom_port = port

    # setpriv keeps only CAP_NET_BIND_SERVICE, seccomp_exec adds the filters.
    with appliance.log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                "setpriv",
                "--bounding-set=-all,+net_bind_service",
                "--no-new-privs",
                SYSTEM_PYTHON,
                str(REPO / "tests" / "seccomp_exec.py"),
                str(allowed),
                "--",
                str(BIN / "appliance"),
                "serve",
            ],
            env=appliance.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_echo(port, appliance.log)
        assert _effective_capabilities(process.pid) == CAP_NET_BIND_SERVICE
        _store_and_render(appliance.http_port, port, appliance.log())
    finally:
        process.terminate()
        code = process.wait(timeout=60)

    assert code == 0, appliance.log()
    assert "Operation not permitted" not in appliance.log()


def _store_and_render(http_port: int, dicom_port: int, log: str) -> None:
    # Compressed and uncompressed images in; thumbnails out exercise the
    # compiled decoders and encoders under the filters.
    files = [sample_file("US1_J2KR.dcm"), sample_file("US1_UNCR.dcm")]
    assert send_files(dicom_port, files) == [0x0000, 0x0000]

    password = _ONE_TIME.search(log)
    assert password, log
    browser = WebSession(f"http://127.0.0.1:{http_port}")
    assert browser.login("admin", password.group(1)).status == 302
    assert browser.change_password(password.group(1), "filtered password").status == 302
    for instance_id in (1, 2):
        reply = browser.get(f"/instances/{instance_id}/thumbnail")
        assert reply.status == 200, reply.text[:300]
        assert reply.headers["content-type"] == "image/jpeg"


def _wait_for_echo(port: int, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + 30
    while echo(port, "PYNETDICOM") != 0x0000:
        assert time.monotonic() < deadline, log()
        time.sleep(0.2)


def _effective_capabilities(pid: int) -> int:
    # The process that serves: setpriv and the wrapper exec'd into it.
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^CapEff:\s+([0-9a-f]+)$", status, re.MULTILINE)
    assert match, status
    return int(match.group(1), 16)


def _running_as_root() -> bool:
    return os.geteuid() == 0
