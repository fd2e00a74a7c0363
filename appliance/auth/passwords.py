"""The password policy for local accounts.

Following NIST SP 800-63B (section 5.1.1.2) rather than composition rules:
length is what makes a password hard to guess, and rules such as "one digit
and one symbol" mostly produce ``Password1!``. A password is refused when

- it has fewer than :data:`MIN_LENGTH` characters, or more than
  :data:`MAX_LENGTH`;
- it contains the user name (names of 3 characters or more);
- it is in the list of common passwords shipped beside this module
  (``common-passwords.txt``), or its letters alone are (``Password2024!``);
- it repeats a few characters only (fewer than :data:`MIN_DISTINCT`
  different ones, such as ``aaaaaaaaaaaa`` or ``abababababab``).

There is no rule on character classes and no expiry: a password is changed
when it may be known to someone else (an admin's reset makes the user
choose a new one at the next login). Directory (LDAP) accounts follow the
directory's own policy.
"""

from __future__ import annotations

import functools
from importlib import resources

MIN_LENGTH = 10
MAX_LENGTH = 256
MIN_DISTINCT = 5
MIN_NAME_LENGTH = 3
COMMON_FILE = "common-passwords.txt"


class PasswordPolicyError(ValueError):
    """A password the policy refuses; the message says why, in plain words."""


def check_password(password: str, username: str = "") -> None:
    """Refuse a password that is easy to guess.

    Parameters
    ----------
    password : str
        The candidate password.
    username : str
        The account's name, which the password must not contain.

    Raises
    ------
    PasswordPolicyError
        Naming the first rule the password breaks.
    """
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(f"a password has at most {MAX_LENGTH} characters")

    lowered = password.lower()
    name = username.strip().lower()
    if len(name) >= MIN_NAME_LENGTH and name in lowered:
        raise PasswordPolicyError("a password must not contain the user name")
    if is_common(password):
        raise PasswordPolicyError(
            "this password is among the first ones a guesser tries; choose another"
        )
    if len(set(lowered)) < MIN_DISTINCT:
        raise PasswordPolicyError(
            f"a password needs at least {MIN_DISTINCT} different characters"
        )


def is_common(password: str) -> bool:
    """Tell whether `password`, or its letters alone, is a common password."""
    lowered = password.lower()
    letters = "".join(char for char in lowered if char.isalpha())
    common = common_passwords()
    return lowered in common or (bool(letters) and letters in common)


@functools.cache
def common_passwords() -> frozenset[str]:
    """Return the shipped list of common passwords, lower-cased."""
    text = resources.files(__package__).joinpath(COMMON_FILE).read_text("utf-8")
    lines = (line.strip().lower() for line in text.splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))
