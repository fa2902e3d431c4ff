"""Deletion requests: a ledger of what was asked, what was done to which model version, and
the evidence that it worked (`project`: settings and requests; `workflow`: applying them, the project layout and crash
safety)."""

from .project import ProjectSettings, add_request, cancel_request, init_project
from .store import SCHEMA_VERSION, Ledger, LedgerBusy, item_hash, normalise
from .verify import Check, verify
from .workflow import apply

__all__ = ["SCHEMA_VERSION", "Check", "Ledger", "LedgerBusy", "ProjectSettings", "add_request", "apply",
           "cancel_request", "init_project", "item_hash", "normalise", "verify"]
