"""Recording an identity decision, then making the live index show it.

A decision and its audit event are written to ``app.db`` in one
``BEGIN IMMEDIATE`` transaction; only then is the index asked to apply it,
through :class:`~appliance.index.identity_actions.IdentityActions` (the
writer's thread). The index reader of the request is closed first, so a
rebuild waiting to swap the index is never held up by a request that waits
for the writer. One decision at a time (``IdentityActions.lock``), so that
the index takes them in the order ``app.db`` numbers them.

If the index cannot apply it, the decision stays recorded: arriving images
already follow it, and the next ``appliance rebuild-index`` applies it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app, flash
from flask_login import current_user

from appliance.index.identity_actions import IdentityActions
from appliance.state.identity import DecisionEntry, record_undo
from appliance.web.access import audit
from appliance.web.runtime import release_index_db, state_db

logger = logging.getLogger(__name__)

EXTENSION = "appliance.identity"
T = TypeVar("T")


ActionsSource = IdentityActions | Callable[[], IdentityActions]


def install_identity(app: Flask, actions: ActionsSource | None) -> None:
    """Give the app the way to apply decisions to the live index (or none).

    The service passes a callable: after a restore's switch the index has a
    new writer, and the web must reach that one.
    """
    app.extensions[EXTENSION] = actions


def can_decide() -> bool:
    """Tell whether this app can apply decisions (it has the index writer)."""
    return _actions() is not None


def decide(
    record: Callable[[str], DecisionEntry],
    action: str,
    patient_id: str,
    study_uid: str = "",
) -> DecisionEntry | None:
    """Record a decision with its audit event, then apply it to the index.

    Parameters
    ----------
    record : callable
        Records the decision on :func:`state_db`, given the user's name.
    action : str
        The audit action, e.g. ``"identity-same-person"``.
    patient_id, study_uid : str
        Whom and what the audit event names.

    Returns
    -------
    DecisionEntry or None
        None when nothing was recorded (the reason is flashed).
    """
    actions = _actions()
    if actions is None:
        _refuse()
        return None
    with actions.lock:

        def write() -> DecisionEntry:
            entry = record(str(current_user.name))
            _audit_decision(action, entry, patient_id, study_uid)
            return entry

        entry = _committed(write, "Not recorded")
        if entry is None:
            return None
        release_index_db()
        _apply(lambda: actions.apply(entry.as_decision()), entry.id)
    return entry


def undo(decision_id: int, note: str) -> bool:
    """Record the undo of a decision, then derive the records again.

    Returns
    -------
    bool
        Whether the undo was recorded (if not, the reason is flashed).
    """
    actions = _actions()
    if actions is None:
        _refuse()
        return False
    with actions.lock:

        def write() -> tuple[DecisionEntry, DecisionEntry]:
            undone, entry = record_undo(
                state_db(), decision_id, str(current_user.name), note
            )
            _audit_decision("identity-undo", entry, undone.records[0].patient_id)
            return undone, entry

        done = _committed(write, "Not undone")
        if done is None:
            return False
        undone, entry = done
        release_index_db()
        _apply(lambda: actions.undo(undone.as_decision()), entry.id)
    return True


def _committed(write: Callable[[], T], refused: str) -> T | None:
    """Run `write` in one ``app.db`` transaction; a ValueError is flashed."""
    conn = state_db()
    conn.execute("BEGIN IMMEDIATE")
    try:
        value = write()
        conn.execute("COMMIT")
    except ValueError as exc:
        conn.execute("ROLLBACK")
        flash(f"{refused}: {exc}", "error")
        return None
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return value


def _apply(job: Callable[[], int], decision_id: int) -> None:
    # The decision is in app.db already: a rebuild applies it if this fails.
    try:
        job()
    except Exception:
        logger.exception(
            "Identity decision %d is recorded but the index could not take it",
            decision_id,
        )
        flash(
            "The decision is recorded, but the archive could not show it yet; "
            "it will after the index is rebuilt (appliance rebuild-index).",
            "error",
        )


def _audit_decision(
    action: str, entry: DecisionEntry, patient_id: str, study_uid: str = ""
) -> None:
    undone = f", undoes {entry.undoes}" if entry.undoes else ""
    audit(
        action,
        patient_id=patient_id,
        study_uid=study_uid or entry.study_uid,
        detail=f"decision {entry.id}{undone}",
    )


def _refuse() -> None:
    flash("Decisions cannot be made here: the archive is not running.", "error")


def _actions() -> IdentityActions | None:
    found: ActionsSource | None = current_app.extensions.get(EXTENSION)
    if found is None or isinstance(found, IdentityActions):
        return found
    return found()
