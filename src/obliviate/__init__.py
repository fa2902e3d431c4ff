"""obliviate: remove what a trained language model knows, and prove it is gone."""

from .api import (
    EvalConfig,
    FinetuneConfig,
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

__version__ = "0.1.0"
__all__ = ["EvalConfig", "FinetuneConfig", "GuardConfig", "LoraSettings", "ObliviateError",
           "UnlearnConfig", "evaluate",
           "finetune", "generate", "load_benchmark", "tofu_sets", "unlearn"]
