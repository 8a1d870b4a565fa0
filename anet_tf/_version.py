"""The package's version, on its own so that any module (and the packaging, through
``setup.cfg``) reads it without importing the package's API."""

__version__ = "0.1.0"
