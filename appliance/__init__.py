"""A DICOM archive and viewer appliance for small ultrasound offices."""

__version__ = "0.1.0"
