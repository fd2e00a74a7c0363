"""Presentation contexts the listener accepts.

Storage is unrestricted (pynetdicom's ``UNRESTRICTED_STORAGE_SERVICE``): any
standard, private or unknown storage SOP class is accepted, because the
Sequoia sends a private Acuson report class. Non-storage services are listed
here one by one.
"""

from __future__ import annotations

# PS3.5 Annex A: every transfer syntax the issue lists, uncompressed first.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1 (Process 14, SV1)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.100",  # MPEG-2 MP@ML
    "1.2.840.10008.1.2.4.101",  # MPEG-2 MP@HL
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264 HP@4.1
    "1.2.840.10008.1.2.4.103",  # MPEG-4 AVC/H.264 BD-compatible
    "1.2.840.10008.1.2.4.104",  # MPEG-4 AVC/H.264 HP@4.2 2D
    "1.2.840.10008.1.2.4.105",  # MPEG-4 AVC/H.264 HP@4.2 3D
    "1.2.840.10008.1.2.4.106",  # MPEG-4 AVC/H.264 Stereo HP@4.2
    "1.2.840.10008.1.2.4.107",  # HEVC/H.265 Main Profile
    "1.2.840.10008.1.2.4.108",  # HEVC/H.265 Main 10 Profile
)

UNCOMPRESSED: tuple[str, ...] = TRANSFER_SYNTAXES[:3]

VERIFICATION = "1.2.840.10008.1.1"  # PS3.4 A.4

# PS3.4 K.6, F.7, J.3 and C.6: worklist, MPPS, commitment, Query/Retrieve.
SERVICES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.31",  # Modality Worklist Information Model - FIND
    "1.2.840.10008.3.1.2.3.3",  # Modality Performed Procedure Step
    "1.2.840.10008.1.20.1",  # Storage Commitment Push Model
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Q/R - FIND
    "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root Q/R - MOVE
    "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root Q/R - GET
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Q/R - FIND
    "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root Q/R - MOVE
    "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root Q/R - GET
)


def is_known_transfer_syntax(uid: str) -> bool:
    """Tell whether `uid` is one of the transfer syntaxes listed above."""
    return uid in TRANSFER_SYNTAXES


def service_contexts() -> list[tuple[str, list[str]]]:
    """Return (abstract syntax, transfer syntaxes) of each non-storage service."""
    return [(uid, list(UNCOMPRESSED)) for uid in (VERIFICATION, *SERVICES)]
