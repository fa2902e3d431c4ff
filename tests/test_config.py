import pytest

from obliviate.api import UnlearnConfig
from obliviate.config import from_dict, load_config, parse_overrides
from obliviate.errors import ObliviateError
from obliviate.methods import METHODS
from obliviate.registry import Registry


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "u.yaml"
    p.write_text("method: graddiff\noptim:\n  lr: 0.001\n  steps: 10\nparams:\n  alpha: 2\n")
    cfg = load_config(UnlearnConfig, p, ["optim.steps=25", "params.gamma=0.5"])
    assert cfg.method == "graddiff"
    assert cfg.optim.lr == 0.001 and cfg.optim.steps == 25
    assert cfg.optim.batch_size == 32  # untouched default survives the merge
    assert cfg.params == {"alpha": 2, "gamma": 0.5}


def test_unknown_keys_fail_with_suggestion(tmp_path):
    with pytest.raises(ObliviateError, match=r"unknown config key 'optim.lrr' \(did you mean 'lr'\?\)"):
        load_config(UnlearnConfig, None, ["optim.lrr=1"])
    with pytest.raises(ObliviateError, match=r"'methd' \(did you mean 'method'\?\)"):
        load_config(UnlearnConfig, None, ["methd=npo"])


def test_type_errors_are_clear():
    with pytest.raises(ObliviateError, match="optim.steps: expected an integer"):
        load_config(UnlearnConfig, None, ["optim.steps=2.5"])
    with pytest.raises(ObliviateError, match="optim.lr: expected float"):
        load_config(UnlearnConfig, None, ["optim.lr=fast"])
    with pytest.raises(ObliviateError, match="not of the form key=value"):
        parse_overrides(["lr"])


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("- a list\n")
    with pytest.raises(ObliviateError, match="mapping at the top level"):
        load_config(UnlearnConfig, p)
    with pytest.raises(ObliviateError, match="config file not found"):
        load_config(UnlearnConfig, tmp_path / "missing.yaml")


def test_method_params_are_strict():
    with pytest.raises(ObliviateError, match=r"'params.bta' \(did you mean 'beta'\?\)"):
        from_dict(METHODS.get("npo"), {"bta": 0.2}, prefix="params.")
    assert from_dict(METHODS.get("npo"), {"beta": 0.2}).beta == 0.2


def test_registry_duplicates_and_unknown_names():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha")(1)
    with pytest.raises(ObliviateError, match="duplicate widget name 'alpha'"):
        reg.register("alpha")(2)
    with pytest.raises(ObliviateError, match=r"unknown widget 'alpah' \(did you mean 'alpha'\?\)"):
        reg.get("alpah")
    with pytest.raises(ObliviateError, match="unknown method 'nop'"):
        METHODS.get("nop")
