"""Only registered modalities may associate, and idle sockets take no slot.

pynetdicom checks a calling AE title against ``require_calling_aet`` while it
negotiates, on the association's own thread, and answers a refusal with a
proper A-ASSOCIATE-RJ ("calling AE title not recognised", PS3.8 9.3.4). We
give it a live list instead of a fixed one: on each negotiation the gate asks
who is registered now and keeps the AE titles whose registered host (if any)
matches the connecting address. A registration therefore takes effect on the
next association, without a restart.

pynetdicom also counts every open connection against
``maximum_associations``, including those that never sent an
A-ASSOCIATE-RQ: a port scanner or a broken peer holding a few sockets open
would lock the modality out ("local limit exceeded") until they time out.
The limit here counts only connections that asked to associate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association

from appliance.state.modalities import Modality

logger = logging.getLogger(__name__)

# pynetdicom treats an empty list as "anyone may call", so a gate that allows
# nobody returns this: a backslash can never be part of an AE title.
_NOBODY = ["\\"]

ModalityLookup = Callable[[], Sequence[Modality]]


class GatedApplicationEntity(ApplicationEntity):
    """An AE whose allowed calling AE titles come from the registry.

    Its association limit counts only connections that asked to associate.

    Parameters
    ----------
    ae_title : str
        The appliance's own AE title.
    lookup : callable
        Returns the registered modalities; called once per association.
    """

    def __init__(self, ae_title: str, lookup: ModalityLookup) -> None:
        super().__init__(ae_title)
        self._lookup = lookup
        self._slots = 10  # pynetdicom's default

    @property  # type: ignore[override]
    def maximum_associations(self) -> int:
        """The association limit, plus the connections yet to request one.

        pynetdicom refuses a request when its acceptor threads outnumber this
        value (PS3.8 9.3.4, local limit exceeded); adding back the connections
        that have not sent an A-ASSOCIATE-RQ means they take no slot.
        """
        waiting = sum(
            1
            for association in self.active_associations
            if association.is_acceptor and association.requestor.primitive is None
        )
        return self._slots + waiting

    @maximum_associations.setter
    def maximum_associations(self, value: int) -> None:
        self._slots = max(1, int(value))

    @property  # type: ignore[override]
    def require_calling_aet(self) -> list[str]:
        """AE titles allowed for the association negotiating on this thread."""
        association = threading.current_thread()
        if not isinstance(association, Association):
            return _NOBODY
        address = str(association.requestor.address)
        try:
            allowed = [m.ae_title for m in self._lookup() if m.allows_address(address)]
        except Exception:
            logger.exception("Could not read the registered modalities")
            return _NOBODY
        return allowed or _NOBODY

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        raise AttributeError("allowed AE titles come from the modality registry")
