"""Compatibility shim: openbayes-serving 0.5.0 defined ServingError here."""

from .errors import ServingError as ServingError

__all__ = ["ServingError"]
