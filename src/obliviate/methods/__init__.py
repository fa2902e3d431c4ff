"""Unlearning methods. Importing this package registers every method in METHODS.

Adding a method is writing one file here: a dataclass registered with `@METHODS.register`
(base.py says what a method is; wrapping.py what a method wrapping another one declares).
"""

from . import (  # noqa: F401  (registration at definition)
    altpo,
    ceu,
    codeunlearn,
    concept_ablation,
    eco,
    flat,
    ga,
    graddiff,
    idknll,
    idkpo,
    lunar,
    npo,
    o3,
    pdu,
    rmu,
    satimp,
    simnpo,
    slug,
    soul,
    sparse,
    spul,
    task_vector,
    uld,
    undial,
    unstar,
    uoe,
    wagle,
    wga,
    whp,
)
from .base import METHODS, Context, build, typed_params
from .wrapping import MethodStack, describe, needs_of

__all__ = ["METHODS", "Context", "MethodStack", "build", "describe", "needs_of", "typed_params"]
