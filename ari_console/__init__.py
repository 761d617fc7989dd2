"""ari-console: re-image the ALMA archive in bulk from a terminal."""

__version__ = "0.1.0"
