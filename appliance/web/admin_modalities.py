"""Admin: the registered modalities, the only DICOM peers allowed in.

A change takes effect at the peer's next association, without a restart
(the listener reads the list at each one). The AE title of the modality
being edited or removed travels as a query or form field, not in the path:
an AE title may hold a slash.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from appliance.state.modalities import (
    Modality,
    add_modality,
    get_modality,
    list_modalities,
    remove_modality,
    update_modality,
)
from appliance.web.access import Permission, audit, requires
from appliance.web.admin_forms import ActionForm, ModalityForm
from appliance.web.runtime import state_db

bp = Blueprint("modalities", __name__, url_prefix="/modalities")


@bp.get("/")
@requires(Permission.ADMINISTER)
def index() -> Any:
    """List the registered modalities."""
    return render_template(
        "admin_modalities.html",
        modalities=list_modalities(state_db()),
        action_form=ActionForm(),
    )


@bp.route("/new", methods=["GET", "POST"])
@requires(Permission.ADMINISTER)
def add() -> Any:
    """Register a modality."""
    form = ModalityForm()
    if not form.validate_on_submit():
        return render_template("admin_modality_form.html", form=form, editing=None)
    try:
        added = add_modality(state_db(), *_fields(form))
    except ValueError as exc:
        flash(_sentence(exc), "error")
        return render_template("admin_modality_form.html", form=form, editing=None), 400
    audit("modality-added", detail=describe(added))
    flash(f"Registered {added.ae_title}.", "info")
    return redirect(url_for("admin.modalities.index"))


@bp.route("/edit", methods=["GET", "POST"])
@requires(Permission.ADMINISTER)
def edit() -> Any:
    """Change a modality's AE title, host, port, issuer or description."""
    current = get_modality(state_db(), request.args.get("ae_title", ""))
    if current is None:
        abort(404)
    form = ModalityForm(obj=current)
    if not form.validate_on_submit():
        return render_template("admin_modality_form.html", form=form, editing=current)
    try:
        changed = update_modality(
            state_db(), current.ae_title, Modality(*_fields(form))
        )
    except ValueError as exc:
        flash(_sentence(exc), "error")
        page = render_template("admin_modality_form.html", form=form, editing=current)
        return page, 400
    audit("modality-changed", detail=f"{describe(current)} -> {describe(changed)}")
    flash(f"Saved {changed.ae_title}.", "info")
    return redirect(url_for("admin.modalities.index"))


@bp.post("/remove")
@requires(Permission.ADMINISTER)
def remove() -> Any:
    """Unregister a modality: it can no longer associate."""
    ae_title = request.form.get("ae_title", "")
    current = get_modality(state_db(), ae_title)
    if current is None:
        abort(404)
    remove_modality(state_db(), current.ae_title)
    audit("modality-removed", detail=describe(current))
    flash(f"Removed {current.ae_title}.", "info")
    return redirect(url_for("admin.modalities.index"))


def describe(modality: Modality) -> str:
    """One line for the audit trail: the modality's registration."""
    return (
        f"{modality.ae_title} host={modality.host or 'any'}"
        f" port={modality.port or '-'} issuer={modality.default_issuer or '-'}"
    )


def _fields(form: ModalityForm) -> tuple[str, str | None, int | None, str, str]:
    return (
        (form.ae_title.data or "").strip(),
        (form.host.data or "").strip() or None,
        form.port.data,
        (form.default_issuer.data or "").strip(),
        (form.description.data or "").strip(),
    )


def _sentence(exc: Exception) -> str:
    text = str(exc)
    return f"{text[:1].upper()}{text[1:]}."
