"""Property-based fuzz of what users hand us: data readers on random bytes and random JSON,
the config parser on random overrides and YAML files, and the CLI on random argument lists
that stop before any model loads. The only acceptable outcomes are success or one clean error
(an ObliviateError; from the CLI exit code 2 and exactly one line on stderr). Examples are
bounded so the file runs in seconds."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obliviate.api import EvalConfig, FinetuneConfig, UnlearnConfig
from obliviate.cli import main
from obliviate.config import load_config, parse_overrides
from obliviate.data.formats import read_tofu_jsonl
from obliviate.errors import ObliviateError
from obliviate.evaluation.results import load_results

FAST = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# JSON values: scalars (with the awkward ones: huge numbers, NaN, lone surrogates) nested a
# few levels deep
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
           | st.sampled_from(["\ud800", "", " ", "\u2028", "10" * 3000]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
ROW_KEYS = ["question", "answer", "text", "paraphrased_answer", "paraphrased_question",
            "perturbed_answer", "perturbed_answers", "id", "entity", "relation"]
# rows that look like data, so the field checks are reached, not only the JSON parser
ROWS = st.dictionaries(st.sampled_from(ROW_KEYS), JSON | st.text(min_size=1, max_size=8),
                       max_size=6)
# results and audit files that pass the schema check, so the readers' shape checks, the
# derived metrics and the report are reached
_NUMBERS = st.none() | st.floats() | st.integers(-3, 3) | st.text(max_size=6)
_CURVE = st.dictionaries(st.sampled_from(["before", "forget_k1", "forget_k4", "forget_kx",
                                          "score", "not_applicable"]), _NUMBERS, max_size=4)
RESULTS = st.fixed_dictionaries({"schema": st.just("obliviate.results/1"), "name": st.text(max_size=6)}, optional={
    "datasets": st.dictionaries(st.sampled_from(["forget", "retain", "mia", "world_facts"]), st.fixed_dictionaries({
        "role": st.sampled_from(["forget", "retain", "utility", "mia"]) | SCALARS,
        "aggregate": st.dictionaries(st.sampled_from(["prob", "truth_ratio", "auc_min_k"]),
                                     st.floats() | _NUMBERS),
        "per_item": st.dictionaries(st.sampled_from(["truth_ratio", "prob", "id"]),
                                    st.lists(st.floats(), min_size=1, max_size=4)
                                    | st.lists(_NUMBERS, max_size=4) | JSON)}), max_size=3),
    "metrics": st.dictionaries(st.sampled_from(["forget_quality", "model_utility", "forget_prob"]),
                               _NUMBERS | JSON, max_size=3),
    "reference": st.none() | st.text(max_size=5)})
AUDIT = st.fixed_dictionaries({"schema": st.just("obliviate.audit/1"), "name": st.text(max_size=6)}, optional={
    "audits": st.dictionaries(st.sampled_from(["relearning", "rephrase"]), st.fixed_dictionaries({}, optional={
        "model": _CURVE | JSON, "target": _CURVE | st.none(), "oracle": _CURVE | st.none(),
        "residual": st.text(max_size=5) | st.fixed_dictionaries({"score": _NUMBERS}) | JSON}),
        max_size=2)})
# override values: random text and the texts YAML, numbers and lists treat specially
VALUES = st.text(max_size=16) | st.sampled_from([
    "", "null", "~", "[1, 2]", "{a: 1}", "[", "{", "}", "nan", "inf", "-inf", "-1", "0", "1e400",
    "true", "yes", "!!python/object/apply:os.system ['true']", "&a [*a]", "'", '"', ":", "- x",
    "0x10", "1_000", "1e-4", ", ,", "*", "%", "\x00", "\ud800", "a\nb", "[INST] {question}"])


def _keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config dataclass, nested ones included."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        out.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            out += _keys(hints[f.name], f"{prefix}{f.name}.")
    return out


def _overrides(cls: type, exclude: tuple[str, ...] = ()) -> st.SearchStrategy[list[str]]:
    keys = [k for k in _keys(cls) if k.split(".")[0] not in exclude]
    key = st.sampled_from([*keys, "params.beta", "params.alpha", "guard.every"]) | st.text(max_size=8)
    pair = st.builds(lambda k, v: f"{k}={v}", key, VALUES)
    return st.lists(pair | st.text(max_size=10), max_size=5)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ---------------------------------------------------------------------------- readers
def _read(path: Path, reader) -> None:
    try:
        reader(path)
    except ObliviateError as exc:
        assert str(exc).strip(), "an error with no message"


@FAST
@given(content=st.binary(max_size=300))
def test_readers_on_random_bytes(workdir, content):
    path = workdir / "bytes.jsonl"
    path.write_bytes(content)
    _read(path, read_tofu_jsonl)
    _read(path, load_results)


@FAST
@given(values=st.lists(JSON | ROWS, min_size=1, max_size=4), as_array=st.booleans())
def test_readers_on_random_json(workdir, values, as_array):
    path = workdir / "values.jsonl"
    text = json.dumps(values) if as_array else "\n".join(json.dumps(v) for v in values)
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _read(path, read_tofu_jsonl)


@FAST
@given(res=RESULTS | JSON)
def test_results_reader_on_random_results(workdir, res):
    path = workdir / "results.json"
    path.write_text(json.dumps(res))
    _read(path, load_results)


# ---------------------------------------------------------------------------- configs
@FAST
@given(data=st.data(), cls=st.sampled_from([UnlearnConfig, EvalConfig, FinetuneConfig]))
def test_config_overrides(data, cls):
    pairs = data.draw(_overrides(cls))
    try:
        parse_overrides(pairs)
        load_config(cls, None, pairs)
    except ObliviateError as exc:
        assert str(exc).strip()


@FAST
@given(content=st.binary(max_size=200) | VALUES.map(lambda v: f"optim:\n  lr: {v}\n".encode(
    "utf-8", "surrogatepass")))
def test_config_files(workdir, content):
    path = workdir / "config.yaml"
    path.write_bytes(content)
    try:
        load_config(UnlearnConfig, path)
    except ObliviateError as exc:
        assert str(exc).strip()


# ---------------------------------------------------------------------------- the CLI
@contextlib.contextmanager
def _inside(folder: Path):
    """A relative path a random argument names lands in the test's folder (contextlib.chdir
    needs Python 3.11)."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _run(workdir: Path, argv: list[str]) -> None:
    """main(argv) in `workdir`: success, or exit code 2 with exactly one stderr line."""
    err = io.StringIO()
    with _inside(workdir), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage errors and --help
            code = exc.code
    lines = err.getvalue().splitlines()
    assert code == 0 or (code == 2 and len(lines) == 1), (code, err.getvalue())


# data and model keys stay fixed: no model may load, no hub may be asked
_FIXED = ("model", "benchmark", "forget", "retain", "holdout", "utility", "mia_reference",
          "reference", "base")
_TOKENS = st.sampled_from(["--name", "--config", "-h", "--seed", "x", "--", "-", "=", "a=b=c"])


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), command=st.sampled_from(["eval", "unlearn"]),
       config=st.none() | st.binary(max_size=80))
def test_cli_model_commands_stop_before_loading(workdir, data, command, config):
    forget = workdir / "forget.jsonl"
    forget.write_text('{"question": "Q?", "answer": "A."}\n')
    cls = EvalConfig if command == "eval" else UnlearnConfig
    extra = data.draw(st.lists(_TOKENS, max_size=2)) + data.draw(_overrides(cls, _FIXED))
    if config is not None:
        (workdir / "c.yaml").write_bytes(config)
        extra += ["--config", "c.yaml"]
    _run(workdir, [command, "--out", "out", f"model={workdir}/no-model", f"forget={forget}", *extra])


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(contents=st.lists(st.binary(max_size=60) | (JSON | RESULTS | AUDIT).map(json.dumps),
                         min_size=1, max_size=3), command=st.sampled_from(["report", "score"]))
def test_cli_results_commands(workdir, contents, command):
    paths = []
    for i, text in enumerate(contents):
        path = workdir / f"r{i}.json"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        paths.append(str(path))
    argv = (["report", *paths, "--out", "rep"] if command == "report"
            else ["score", paths[0], *(["--reference", paths[1]] if len(paths) > 1 else [])])
    _run(workdir, argv)


@pytest.mark.parametrize("content", [b"?", b"1: 2\n", b"optim:\n  ? \n"])
def test_config_keys_that_are_not_names_get_one_clear_error(workdir, content):
    """Found by the fuzzer: YAML's `?` makes a null key, and numbers make number keys."""
    path = workdir / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ObliviateError, match="is not a name"):
        load_config(UnlearnConfig, path)
