"""Run a command under the system call rules that the unit sets.

systemd applies ``MemoryDenyWriteExecute=yes`` and ``SystemCallFilter=``
(with ``SystemCallErrorNumber=EPERM``) as seccomp filters just before it
starts the service. There is no systemd here to do it, so this script
installs the same two filters with libseccomp and then execs the command,
which inherits them::

    /usr/bin/python3 tests/seccomp_exec.py ALLOWED-CALLS-FILE -- COMMAND...

ALLOWED-CALLS-FILE lists the allowed system calls, one a line. Run with
Debian's Python and its ``python3-seccomp`` package (installed by
``installer/dev-setup.sh --test``), not in the venv.
"""

from __future__ import annotations

import errno
import os
import sys

import seccomp

PROT_WRITE = 0x2
PROT_EXEC = 0x4
SHM_EXEC = 0o100000


def deny_write_execute() -> seccomp.SyscallFilter:
    """Like MemoryDenyWriteExecute=yes: no memory both writable and executable."""
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    refuse = seccomp.ERRNO(errno.EPERM)
    both = PROT_WRITE | PROT_EXEC
    rules.add_rule(refuse, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, both, both))
    for call in ("mprotect", "pkey_mprotect"):
        rules.add_rule(
            refuse, call, seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC)
        )
    rules.add_rule(
        refuse, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC)
    )
    return rules


def allow_only(calls: list[str]) -> seccomp.SyscallFilter:
    """Like SystemCallFilter= with SystemCallErrorNumber=EPERM."""
    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for call in calls:
        try:
            rules.add_rule(seccomp.ALLOW, call)
        except (RuntimeError, ValueError):
            pass  # not a system call of this architecture
    return rules


def main() -> None:
    """Install both filters, then become the command."""
    allowed_file, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        sys.exit(__doc__)
    with open(allowed_file, encoding="ascii") as handle:
        calls = [line.strip() for line in handle if line.strip()]

    # Each filter stacks; the kernel applies the stricter answer of the two.
    deny_write_execute().load()
    allow_only(calls).load()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
