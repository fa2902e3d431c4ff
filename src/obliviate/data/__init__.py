"""Benchmarks and data formats: the only code that knows file layouts."""

from .examples import Example
from .formats import load_examples, read_tofu_jsonl, validate_split
from .generator import Benchmark, generate_benchmark

__all__ = [
    "Benchmark",
    "Example",
    "generate_benchmark",
    "load_examples",
    "read_tofu_jsonl",
    "validate_split",
]
