"""Robustness audits: is the knowledge gone, or only hidden? Importing this package registers
every audit in AUDITS."""

from . import latent, prompts, weights  # noqa: F401  (registration at definition)
from .base import AUDITS, AuditData, NotApplicable, residual
from .run import AuditConfig, audit

__all__ = ["AUDITS", "AuditConfig", "AuditData", "NotApplicable", "audit", "residual"]
