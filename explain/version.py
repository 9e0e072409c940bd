"""Descry's version, kept equal to pyproject.toml's; recorded in every label file's provenance and calibration."""

__version__ = "0.3.0"
