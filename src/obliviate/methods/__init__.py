"""Unlearning methods. Importing this package registers every method in METHODS."""

from . import ga, graddiff, npo  # noqa: F401  (registration at definition)
from .base import METHODS, ReferenceCache, describe

__all__ = ["METHODS", "ReferenceCache", "describe"]
