"""Benchmarks and data formats: the only code that knows file layouts."""

from .examples import Example
from .formats import load_examples, read_tofu_jsonl, validate_holdout, validate_split
from .generator import Benchmark, generate_benchmark

# `utility=real_world`: 40 general-knowledge QA pairs shipped with the package (capitals,
# science, history): what a pretrained model knows and must keep after unlearning
REAL_WORLD = "real_world"


def real_world_examples() -> list[Example]:
    from importlib import resources

    path = resources.files("obliviate").joinpath("resources/real_world.jsonl")
    with resources.as_file(path) as local:
        return read_tofu_jsonl(local)

__all__ = [
    "REAL_WORLD",
    "Benchmark",
    "Example",
    "generate_benchmark",
    "load_examples",
    "read_tofu_jsonl",
    "real_world_examples",
    "validate_holdout",
    "validate_split",
]
