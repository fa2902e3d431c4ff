"""Saved model folders carry the keys transformers 4.x reads, and still load the same in 5.x.
(Loading them with transformers 4.51 itself is checked by benchmarks/vs_openunlearning.py,
which runs a 4.51 framework on a folder obliviate saved.)"""

from __future__ import annotations

import json

import torch

from obliviate.models import (
    TinyModelConfig,
    build_tiny_model,
    legacy_keys,
    load_model,
    save_model,
    train_tokenizer,
)


def test_saved_folder_names_the_4x_tokenizer_class_dtype_and_rope(tmp_path):
    tok = train_tokenizer(["the river flows to the sea", "ada was born in london"] * 10, vocab_size=300)
    model = build_tiny_model(tok, TinyModelConfig(layers=2, hidden=32, heads=2, intermediate=64)).eval()
    out = save_model(model, tok, tmp_path / "m", {"produced_by": "test"})
    cfg = json.loads((out / "config.json").read_text())
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert cfg["torch_dtype"] == cfg["dtype"] == "float32"
    assert cfg["rope_theta"] == cfg["rope_parameters"]["rope_theta"]
    assert "rope_scaling" not in cfg  # default rope: 4.x wants none
    again, tok2 = load_model(out)
    ids = torch.tensor([tok.encode("the river flows")])
    assert tok2.encode("the river flows") == tok.encode("the river flows")
    with torch.no_grad():
        assert torch.equal(again.eval()(input_ids=ids).logits, model(input_ids=ids).logits)


def test_scaled_rope_becomes_rope_scaling_and_existing_keys_stay(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "dtype": "bfloat16", "torch_dtype": "float16",
        "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0}}))
    legacy_keys(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["torch_dtype"] == "float16"  # a key already there is not overwritten
    assert cfg["rope_theta"] == 500000.0
    assert cfg["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0}
