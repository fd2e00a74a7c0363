"""DICOM networking: the listener and its service handlers."""
