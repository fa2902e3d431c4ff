"""obliviate: remove what a trained language model knows, and prove it is gone."""

from .api import (
    EvalConfig,
    FinetuneConfig,
    FinetuneOptim,
    GuardConfig,
    LoraSettings,
    UnlearnConfig,
    evaluate,
    finetune,
    generate,
    load_benchmark,
    tofu_sets,
    unlearn,
)
from .errors import ObliviateError
from .quick import forget

__version__ = "0.1.0"
__all__ = ["EvalConfig", "FinetuneConfig", "FinetuneOptim", "GuardConfig", "LoraSettings", "ObliviateError",
           "UnlearnConfig", "evaluate",
           "finetune", "forget", "generate", "load_benchmark", "tofu_sets", "unlearn"]
