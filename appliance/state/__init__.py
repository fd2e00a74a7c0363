"""The state database ``app.db``: everything that cannot be derived."""

from appliance.state.modalities import (
    Modality,
    add_modality,
    list_modalities,
    remove_modality,
)
from appliance.state.schema import open_state
from appliance.state.users import Role, User

__all__ = [
    "Modality",
    "Role",
    "User",
    "add_modality",
    "list_modalities",
    "open_state",
    "remove_modality",
]
