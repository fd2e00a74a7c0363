"""Jinja filters that show DICOM values the way staff read them."""

from __future__ import annotations

from flask import Flask

_SEX = {"F": "F", "M": "M", "O": "Other"}


def register_filters(app: Flask) -> None:
    """Add the filters ``da``, ``tm`` and ``pn`` to the app's templates."""
    app.add_template_filter(dicom_date, "da")
    app.add_template_filter(dicom_time, "tm")
    app.add_template_filter(person_name, "pn")
    app.add_template_filter(sex, "sex")


def dicom_date(value: str | None) -> str:
    """``20240131`` → ``2024-01-31`` (PS3.5 6.2, VR DA); other text unchanged."""
    text = (value or "").strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def dicom_time(value: str | None) -> str:
    """``101530.25`` → ``10:15`` (PS3.5 6.2, VR TM)."""
    text = (value or "").strip().replace(":", "")
    if len(text) >= 4 and text[:4].isdigit():
        return f"{text[:2]}:{text[2:4]}"
    return text


def person_name(value: str | None) -> str:
    """``DOE^JANE^M`` → ``DOE, JANE M`` (PS3.5 6.2.1, VR PN)."""
    alphabetic = (value or "").split("=", 1)[0]
    parts = [part.strip() for part in alphabetic.split("^")]
    family = parts[0] if parts else ""
    given = " ".join(part for part in parts[1:3] if part)
    return f"{family}, {given}" if family and given else family or given


def sex(value: str | None) -> str:
    """Show a DICOM sex code (PS3.3 C.7.1.1) or nothing."""
    return _SEX.get((value or "").strip().upper(), "")


def to_dicom_date(value: str | None) -> str:
    """``2024-01-31`` (an HTML date input) → ``20240131``; bad input → empty."""
    digits = (value or "").strip().replace("-", "")
    return digits if len(digits) == 8 and digits.isdigit() else ""
