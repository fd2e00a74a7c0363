"""Turning stored DICOM frames into images a browser shows.

JPEG Baseline frames go out as stored; everything else is decoded with
pydicom (and pylibjpeg's decoders), converted to display values and encoded
as PNG, once, into a disk cache keyed by the file's content hash.
"""
