"""Deletion requests: a ledger of what was asked, what was done to which model version, and
the evidence that it worked (`project`: settings and requests; `workflow`: applying them, the project layout and crash
safety)."""

from .hashing import Hasher, normalise
from .project import (
    ProjectSettings,
    add_request,
    cancel_request,
    init_project,
    target_forget_file,
    unlearn_config,
)
from .store import SCHEMA_VERSION, Ledger, LedgerBusy
from .verify import Check, verify
from .workflow import apply

__all__ = ["SCHEMA_VERSION", "Check", "Hasher", "Ledger", "LedgerBusy", "ProjectSettings",
           "add_request", "apply", "cancel_request", "init_project", "normalise", "target_forget_file",
           "unlearn_config", "verify"]
