"""Config values are checked when the config is read, before anything loads or writes: each
bad value is one clear line naming its key; text fields take exactly what was typed; a run that
produces non-finite weights fails instead of saving them."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from obliviate.api import EvalConfig, FinetuneConfig
from obliviate.audits import AuditConfig
from obliviate.cli import main
from obliviate.config import load_config
from obliviate.errors import ObliviateError
from obliviate.unlearning import UnlearnConfig


@pytest.mark.parametrize("cls, override, message", [
    (UnlearnConfig, "optim.steps=-1", "optim.steps: must be positive (got -1)"),
    (UnlearnConfig, "optim.steps=0", "optim.steps: must be positive (got 0)"),
    (UnlearnConfig, "optim.lr=-1", "optim.lr: must be in (0, 100] (got -1.0)"),
    (UnlearnConfig, "optim.lr=inf", "optim.lr: expected a finite number, got 'inf'"),
    (UnlearnConfig, "params.beta=nan", "params.beta: expected a finite number, got 'nan'"),
    (UnlearnConfig, "optim.schedule=cosin",
     "optim.schedule: unknown value 'cosin' (did you mean 'cosine'?); one of: cosine, constant, linear"),
    (UnlearnConfig, "optim.batch_size=0", "optim.batch_size: must be positive (got 0)"),
    (UnlearnConfig, "optim.warmup_ratio=1.5", "optim.warmup_ratio: must be between 0 and 1 (got 1.5)"),
    (UnlearnConfig, "optim.checkpoint_every=-3", "optim.checkpoint_every: must be 0 or more (got -3)"),
    (UnlearnConfig, "guard.every=0", "guard.every: must be positive (got 0)"),
    (UnlearnConfig, "guard.probe_items=0", "guard.probe_items: must be positive (got 0)"),
    (UnlearnConfig, "lora.r=0", "lora.r: must be positive (got 0)"),
    (UnlearnConfig, "params.bta=1", "unknown config key 'params.bta' (did you mean 'beta'?)"),
    (FinetuneConfig, "tiny.heads=3", "tiny.heads: must divide hidden (128 is not a multiple of 3)"),
    (FinetuneConfig, "role=orcle", "role: unknown value 'orcle' (did you mean 'oracle'?)"),
    (EvalConfig, "max_new_tokens=-1", "max_new_tokens: must be 0 or more (got -1)"),
    (EvalConfig, "batch_size=0", "batch_size: must be positive (got 0)"),
    (EvalConfig, "suites=[tofu,mai]", "suites: unknown value 'mai' (did you mean 'mia'?)"),
    (AuditConfig, "params.relearning.lr=-x", "params.relearning.lr: expected float, got '-x'"),
    (AuditConfig, "audits=rephrse", "audits: unknown value 'rephrse' (did you mean 'rephrase'?)"),
])
def test_bad_values_are_refused_when_read_naming_the_key(cls, override, message):
    with pytest.raises(ObliviateError) as err:
        load_config(cls, None, [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_text_fields_take_exactly_what_was_typed():
    """The README's template and one with a newline: kept byte for byte (YAML would have read
    the first as a list and the second as a mapping)."""
    for template in ("[INST] {question} [/INST] ", "Q: {question}\nA: ", "Question: {question}\nAnswer: "):
        assert load_config(UnlearnConfig, None, [f"template={template}"]).template == template
    cfg = load_config(EvalConfig, None, ["suites=[tofu,mia]", "utility=a.jsonl,b.jsonl"])
    assert cfg.suites == ["tofu", "mia"] and cfg.utility == ["a.jsonl", "b.jsonl"]


def test_a_mapping_for_a_text_field_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("template:\n  question: x\n")
    with pytest.raises(ObliviateError, match=r"^template: expected text, got dict"):
        load_config(UnlearnConfig, path)


def test_params_are_typed_in_the_resolved_config():
    cfg = load_config(UnlearnConfig, None, ["method=soul", "params.rho=0.1",
                                            "params.base_params.beta=0.2"])
    assert cfg.params == {"rho": 0.1, "base_params": {"beta": 0.2}}
    with pytest.raises(ObliviateError, match="params.base_params.beta: expected float"):
        load_config(UnlearnConfig, None, ["method=soul", "params.base_params.beta=big"])


def test_yaml_file_with_a_byte_order_mark_or_not_utf8(tmp_path):
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfmethod: ga\n")
    assert load_config(UnlearnConfig, bom).method == "ga"
    utf16 = tmp_path / "u16.yaml"
    utf16.write_bytes("method: ga\n".encode("utf-16"))
    with pytest.raises(ObliviateError, match="is not UTF-8 text"):
        load_config(UnlearnConfig, utf16)


def test_cli_refuses_a_bad_value_before_reading_anything(tmp_path, capsys):
    """The model does not exist: a bad value is reported first, and nothing is written."""
    out = tmp_path / "out"
    assert main(["unlearn", "--out", str(out), f"model={tmp_path / 'missing'}",
                 "forget=f.jsonl", "optim.steps=-1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "obliviate: error: optim.steps: must be positive (got -1)"]
    assert list(tmp_path.iterdir()) == []


def _tree_sha(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("obliviate:")]


@pytest.fixture
def nan_after_step(monkeypatch):
    """An optimiser whose update leaves one weight NaN, as an overflowing update does."""
    import obliviate.train as train_module

    class Poisoned(torch.optim.AdamW):
        def step(self, closure=None):
            out = super().step(closure)
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
            return out

    monkeypatch.setattr(train_module, "_optimizer", lambda cfg, params: Poisoned(params, lr=cfg.lr))


@pytest.mark.slow
def test_a_run_that_leaves_non_finite_weights_fails(memorised, tmp_path, nan_after_step, capsys):
    """With the guard off, the final check of the weights fails the run: one error line, no
    model written, the input untouched. With the guard on, the first probe after the step is
    NaN (which compares False with the floor), a collapse: the last good state (step 0) is
    kept beside the output instead."""
    before = _tree_sha(memorised / "target")
    common = [f"model={memorised / 'target'}", f"benchmark={memorised / 'bench'}", "method=ga",
              "guard.forget_stop=0"]
    out = tmp_path / "ga"
    code = main(["unlearn", "--out", str(out), *common, "optim.steps=1", "guard.retain_floor=0"])
    err = _errors(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and "non-finite weights" in err[0], err
    assert not out.exists() and not (tmp_path / "ga.last-good").exists()
    code = main(["unlearn", "--out", str(tmp_path / "ga2"), *common, "optim.steps=4",
                 "guard.every=1"])
    err = _errors(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and "probability became nan at step 1" in err[0], err
    assert not (tmp_path / "ga2").exists()
    good = json.loads((tmp_path / "ga2.last-good" / "obliviate.json").read_text())
    assert good["last_good_step"] == 0
    assert _tree_sha(memorised / "target") == before


def test_an_absurd_learning_rate_is_refused_when_read():
    with pytest.raises(ObliviateError, match=r"^optim.lr: must be in \(0, 100\] \(got 1e\+300\)"):
        load_config(UnlearnConfig, None, ["optim.lr=1e300"])
