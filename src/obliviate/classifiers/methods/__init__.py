"""Classifier unlearning methods: importing this package registers each (one file each)."""

from . import (  # noqa: F401  (registration at definition)
    concept_poison,
    finetune,
    ga,
    l1_sparse,
    laf,
    prune,
    random_labels,
    retrain,
    saliency,
    stochastic_teacher,
)
from .base import CLASSIFIER_METHODS, Context, describe, predict_proba

__all__ = ["CLASSIFIER_METHODS", "Context", "describe", "predict_proba"]
