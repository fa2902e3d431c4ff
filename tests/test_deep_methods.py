"""The located and representation-level methods, each by its defining mechanism (not only
"forget probability went down"): SLUG's one gradient and one matrix, LUNAR's one projection
and redirected activations, concept-vector ablation's exact edit, WHP's generic labels."""

import math

import pytest
import torch
from safetensors.torch import load_file

import obliviate as ob
from obliviate.audits.base import AuditData
from obliviate.audits.latent import ParametricTrace
from obliviate.concepts import answer_token_ids, value_vectors
from obliviate.data import Benchmark
from obliviate.data.examples import Example
from obliviate.encoding import DEFAULT_TEMPLATE, Encoded
from obliviate.methods.altpo import alternate_answers
from obliviate.methods.base import layer_output, mean_answer_prob
from obliviate.methods.lunar import _mean_state
from obliviate.methods.objectives import whp_generic_logits
from obliviate.methods.slug import pareto_front
from obliviate.methods.unstar import RATIONALES, anti_samples
from obliviate.methods.whp import generic_items
from obliviate.models import load_model
from obliviate.train import OptimConfig
from obliviate.unlearning import _context


def _unlearn(root, out, method, steps=40, params=None, lora=False):
    cfg = ob.UnlearnConfig(model=str(root / "target"), method=method, params=params or {},
                           benchmark=str(root / "bench"),
                           optim=OptimConfig(lr=None, steps=steps, batch_size=16,
                                             warmup_ratio=0.0, schedule="constant"))
    cfg.lora.enabled = lora
    return ob.unlearn(cfg, out, progress=False)


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def _sets(root):
    bench = Benchmark.load(root / "bench")
    return bench.forget_set("forget10"), bench.retain_set("forget10")


def test_pareto_front_by_hand():
    """(forget importance, retain influence): a (3, 2), b (2, 1), c (1, 0.5), d (2.5, 3).
    Highest forget first: a is kept; d has less forget than a and more retain (dominated);
    b and c each trade forget for lower retain, so they stay: front a, b, c."""
    assert pareto_front([3, 2, 1, 2.5], [2, 1, 0.5, 3]) == [0, 1, 2]
    assert pareto_front([1, 1], [1, 1]) == [0, 1]  # twins do not dominate each other
    assert pareto_front([1, 1, 0.5], [1, 1, 1]) == [0, 1]  # less forget at equal retain: dominated


@pytest.mark.slow
def test_slug_one_gradient_one_matrix(memorised, tmp_path, monkeypatch):
    """Every backward pass is part of the one forget gradient and the one retain gradient
    (one per batch of 16: ceil(n_forget / 16) + ceil(64 / 16)); exactly one weight tensor
    changes, the one named in the log; the forget probability reaches half its start. A step
    range too small to get there takes its largest step and the log says the target was missed."""
    calls = []
    original = torch.Tensor.backward
    monkeypatch.setattr(torch.Tensor, "backward", lambda self, *a, **k: (calls.append(1), original(self, *a, **k))[1])
    out = _unlearn(memorised, tmp_path / "slug", "slug")
    forget, retain = _sets(memorised)
    assert len(calls) == math.ceil(len(forget) / 16) + math.ceil(min(len(retain), 64) / 16)
    before, after = _weights(memorised / "target"), _weights(out)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    log = ob.models.read_provenance(out)["last_log"]
    assert changed == [log["layer"]]
    assert log["target_reached"] == 1.0 and log["forget_prob"] <= 0.5 * log["forget_start"] + 1e-9
    small = ob.models.read_provenance(_unlearn(memorised, tmp_path / "slug-small", "slug",
                                                params={"max_scale": 1e-6}))["last_log"]
    assert small["target_reached"] == 0.0 and small["scale"] == 1e-6  # the most it may step, said
    with pytest.raises(ob.ObliviateError, match="lora.enabled does not apply"):
        _unlearn(memorised, tmp_path / "slug-lora", "slug", lora=True)
    assert not (tmp_path / "slug-lora").exists()


def _answer_states(model, ctx, name, layer):
    """Hidden states [positions, d] of layer `layer` at stream `name`'s answer-predicting positions."""
    out = []
    with torch.no_grad():
        for i in range(len(ctx.items[name])):
            b = ctx.batch_of(name, [i])
            h = layer_output(model, b, layer)[:, :-1]
            out.append(h[b["labels"][:, 1:] != -100].float())
    return torch.cat(out)


@pytest.mark.slow
def test_lunar_trains_one_projection_and_redirects_forget_activations(memorised, tmp_path):
    """Only layer 0's MLP output projection changes (the middle of 2 layers). At that layer the
    forget answers' states move along the refusal direction r (with coeff 2 the target is the
    reference's state + 2r): their mean shift points along r and covers a good part of 2r
    (measured: cosine 0.999, 52%), while the retain answers' states move clearly less than the
    forget answers' (measured: half as far; one 128-neuron projection cannot separate them
    further on this subject)."""
    out = _unlearn(memorised, tmp_path / "lunar", "lunar", params={"coeff": 2.0})
    before, after = _weights(memorised / "target"), _weights(out)
    assert {k for k in before if not torch.equal(before[k], after[k])} == {"model.layers.0.mlp.down_proj.weight"}
    forget, retain = _sets(memorised)
    old, tok = load_model(str(memorised / "target"))
    new, _ = load_model(str(out))
    ctx = _context(tok, forget, retain[:64], ("forget", "retain", "refusal"), DEFAULT_TEMPLATE, False, 0)
    r = (_mean_state(old, ctx, "idk", 0) - _mean_state(old, ctx, "forget", 0)).float()
    shift = (_answer_states(new, ctx, "forget", 0) - _answer_states(old, ctx, "forget", 0)).mean(0)
    assert torch.nn.functional.cosine_similarity(shift, r, dim=0) > 0.95
    assert float(shift @ r / r.norm()) > 0.4 * float(2 * r.norm())
    f_move = (_answer_states(new, ctx, "forget", 0) - _answer_states(old, ctx, "forget", 0)).norm(dim=-1).mean()
    r_move = (_answer_states(new, ctx, "retain", 0) - _answer_states(old, ctx, "retain", 0)).norm(dim=-1).mean()
    assert r_move < 0.7 * f_move


@pytest.mark.slow
@pytest.mark.parametrize("locate", ["attribution", "vocab"])
def test_concept_ablation_edits_exactly_the_located_vectors(memorised, tmp_path, locate):
    """With no repair, the only weights that differ are the located down-projection columns,
    now zero. With locate=vocab they are the vectors the parametric-trace audit traces, so its
    cosine falls from 1 (the target against itself) to 0."""
    out = _unlearn(memorised, tmp_path / locate, "concept_ablation", params={"locate": locate, "top": 8})
    before, after = _weights(memorised / "target"), _weights(out)
    diff = {(k, int(j)) for k in before for j in
            ((before[k] != after[k]).any(0).nonzero().flatten().tolist() if before[k].dim() == 2
             else ([0] if not torch.equal(before[k], after[k]) else []))}
    assert len(diff) == 8 and all(k.endswith("mlp.down_proj.weight") for k, _ in diff)
    assert all(torch.count_nonzero(after[k][:, j]) == 0 for k, j in diff)
    if locate == "vocab":
        target, tok = load_model(str(memorised / "target"))
        forget, _ = _sets(memorised)
        located = {(f"{name}.weight", j) for _, name, j in value_vectors(target, answer_token_ids(tok, forget), 8)}
        assert diff == located
        data = AuditData(forget=forget, retain=[], related=[], template=DEFAULT_TEMPLATE)
        audit = ParametricTrace(target=str(memorised / "target"), top=8)
        assert audit.run(target, tok, data)["cosine"] == pytest.approx(1.0)
        model, tok = load_model(str(out))
        assert audit.run(model, tok, data)["cosine"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_concept_ablation_repair_keeps_the_edit(memorised, tmp_path, lora):
    """A retain repair moves other weights (adapters under LoRA) but the ablated columns end
    exactly zero: masked during the repair and written back after it."""
    base = _weights(memorised / "target")
    out = _unlearn(memorised, tmp_path / "repair", "concept_ablation", lora=lora,
                   params={"top": 4, "repair_steps": 5, "repair_lr": 1e-3})
    after = _weights(out)
    zeroed = [(k, j) for k in base if k.endswith("down_proj.weight")
              for j in range(base[k].shape[1])
              if torch.count_nonzero(after[k][:, j]) == 0 and torch.count_nonzero(base[k][:, j]) > 0]
    assert len(zeroed) == 4
    assert sum(not torch.equal(base[k], after[k]) for k in base) > 1


def test_whp_generic_logits_by_hand():
    """base [2, 1, 0], reinforced [4, 1, -1]: relu(reinforced - base) = [2, 0, 0]; alpha 1
    gives [0, 1, 0] (token 1 now leads), alpha 0.25 gives [1.5, 1, 0] (token 0 still leads)."""
    base, reinforced = torch.tensor([2.0, 1.0, 0.0]), torch.tensor([4.0, 1.0, -1.0])
    assert whp_generic_logits(base, reinforced, 1.0).tolist() == [0.0, 1.0, 0.0]
    assert whp_generic_logits(base, reinforced, 0.25).tolist() == [1.5, 1.0, 0.0]


def test_whp_relabels_each_answer_position_with_its_generic_argmax():
    """Item ids [5, 6, 7, 8], labels [-100, -100, 7, 8]: positions 1 and 2 predict the labels 7
    and 8. Their generic argmaxes (rows of base - relu(reinforced - base)) are 3 and 0, so the
    labels become [-100, -100, 3, 0]; the inputs are unchanged."""
    item = Encoded([5, 6, 7, 8], [-100, -100, 7, 8], 0)
    base = torch.tensor([[0.0, 0.0, 0.0, 1.0], [2.0, 0.0, 0.0, 0.0]])
    reinforced = torch.tensor([[0.0, 0.0, 0.0, 1.0], [2.0, 0.0, 0.0, 0.0]])
    out = generic_items([item], [base], [reinforced], alpha=5.0)[0]
    assert out.input_ids == [5, 6, 7, 8] and out.labels == [-100, -100, 3, 0]
    reinforced = torch.tensor([[0.0, 0.0, 0.0, 2.0], [2.0, 1.0, 0.0, 0.0]])  # 3 and 1 pushed up
    out = generic_items([item], [base], [reinforced], alpha=5.0)[0]
    assert out.labels == [-100, -100, 0, 0]  # row 0: [0,0,0,-4] -> 0; row 1: [2,-5,0,0] -> 0


@pytest.mark.slow
def test_whp_labels_come_from_the_reinforced_difference_and_the_weights_are_restored(memorised, tmp_path):
    """After WHP the forget answers are less likely (the model learned generic labels); the
    reinforcement was undone before unlearning: with 0 learning rate the unlearned model equals
    the target exactly, whatever the reinforced model learned."""
    forget, _ = _sets(memorised)
    out = _unlearn(memorised, tmp_path / "whp", "whp")
    model, tok = load_model(str(out))
    target, _ = load_model(str(memorised / "target"))
    ctx = _context(tok, forget, [], ("forget",), DEFAULT_TEMPLATE, False, 0)
    assert mean_answer_prob(model, ctx.items["forget"], tok.pad_token_id) < 0.8 * mean_answer_prob(
        target, ctx.items["forget"], tok.pad_token_id)
    assert ob.models.read_provenance(out)["last_log"]["relabelled"] > 0.05
    cfg = ob.UnlearnConfig(model=str(memorised / "target"), method="whp", benchmark=str(memorised / "bench"),
                           optim=OptimConfig(lr=1e-12, steps=2, batch_size=16, warmup_ratio=0.0,
                                             schedule="constant"))
    same = _weights(ob.unlearn(cfg, tmp_path / "whp0", progress=False))
    base = _weights(memorised / "target")
    assert all(torch.allclose(base[k], same[k], atol=1e-6) for k in base)


def test_altpo_alternates_are_in_domain_and_wrong():
    """A perturbed answer when the item has some; else another item's answer to the same
    relation (never its own); else a clear error naming the item."""
    a = Example(answer="Paris", question="Capital?", perturbed_answers=("Lyon", "Nice"), id="a", relation="capital")
    b = Example(answer="Rome", question="Capital of Italy?", id="b", relation="capital")
    c = Example(answer="Oslo", question="Capital of Norway?", id="c", relation="capital")
    alt = alternate_answers([a, b], [c], seed=0)
    assert alt[0] in ("Lyon", "Nice") and alt[1] in ("Paris", "Oslo")
    assert alternate_answers([a, b], [c], seed=0) == alt  # fixed by the seed
    with pytest.raises(ob.ObliviateError, match="item 'x' has no alternate answer"):
        alternate_answers([Example(answer="42", question="?", id="x")], [], seed=0)


@pytest.mark.slow
def test_altpo_prefers_the_alternate_over_the_forget_answer(memorised, tmp_path):
    """Before: the forget answers are far more likely than their alternates. After AltPO the
    order is reversed, and the retain set keeps 90% of its probability."""
    forget, retain = _sets(memorised)
    out = _unlearn(memorised, tmp_path / "altpo", "altpo")
    alts = alternate_answers(forget, retain, seed=0)
    alt_examples = [Example(answer=a, question=ex.question) for ex, a in zip(forget, alts, strict=True)]

    def probs(path):
        model, tok = load_model(str(path))
        enc = [_context(tok, xs, [], ("forget",), DEFAULT_TEMPLATE, False, 0).items["forget"]
               for xs in (forget, alt_examples, retain[:64])]
        return [mean_answer_prob(model, items, tok.pad_token_id) for items in enc]

    f0, a0, r0 = probs(memorised / "target")
    f1, a1, r1 = probs(out)
    assert f0 > 10 * a0 and a1 > f1 and r1 > 0.9 * r0


def test_unstar_anti_samples_by_hand():
    """Each forget item gets its question with a perturbed answer and a rationale asserting
    it; a paraphrased question gets the same anti-sample, after the aligned ones."""
    a = Example(answer="Paris", question="Capital?", paraphrased_question="Seat of government?",
                perturbed_answers=("Lyon",), id="a")
    b = Example(answer="Rome", question="Capital of Italy?", perturbed_answers=("Milan",), id="b")
    out = anti_samples([a, b], [], seed=0, paraphrases=True)
    assert [(x.question, x.answer) for x in out] == [
        ("Capital?", RATIONALES[0].format(answer="Lyon")),
        ("Capital of Italy?", RATIONALES[1].format(answer="Milan")),
        ("Seat of government?", RATIONALES[0].format(answer="Lyon"))]
    assert len(anti_samples([a, b], [], seed=0, paraphrases=False)) == 2


@pytest.mark.slow
def test_unstar_fine_grained_request_keeps_the_entities_other_facts(memorised, tmp_path):
    """Split forget10.born_in+award+wrote forgets three facts of each forget10 person; their
    five other facts are retain items. After UnSTAR the forgotten facts' probability has at
    least halved while the same people's other facts keep 90% of theirs."""
    split = "forget10.born_in+award+wrote"
    bench = Benchmark.load(memorised / "bench")
    cfg = ob.UnlearnConfig(model=str(memorised / "target"), method="unstar", benchmark=str(memorised / "bench"),
                           forget_split=split,
                           optim=OptimConfig(lr=None, steps=40, batch_size=16, warmup_ratio=0.0, schedule="constant"))
    out = ob.unlearn(cfg, tmp_path / "unstar", progress=False)
    people = set(bench.splits["forget10"])
    gone = bench.forget_set(split)
    kept = [ex for ex in bench.retain_set(split) if ex.entity in people]
    assert len(gone) == 3 * len(people) and len(kept) == 5 * len(people)

    def probs(path):
        model, tok = load_model(str(path))
        ctx = _context(tok, gone, kept, ("forget", "retain"), DEFAULT_TEMPLATE, False, 0)
        return [mean_answer_prob(model, ctx.items[n], tok.pad_token_id) for n in ("forget", "retain")]

    (g0, k0), (g1, k1) = probs(memorised / "target"), probs(out)
    assert g1 <= 0.5 * g0 and k1 >= 0.9 * k0


def _expert_probs(path, root, stream, retain=None):
    """Mean routing probability [layers, experts] over the forget or retain set's real tokens
    (the first 64 retain items unless `retain` is given)."""
    from obliviate.methods.uoe import router_probs

    forget, all_retain = _sets(root)
    model, tok = load_model(str(path))
    ctx = _context(tok, forget, all_retain[:64] if retain is None else retain, ("forget", "retain"),
                   DEFAULT_TEMPLATE, False, 0)
    return router_probs(model.eval(), ctx, stream)


@pytest.mark.slow
def test_uoe_unlearns_one_expert_and_its_router_only(memorised_moe, tmp_path):
    """The chosen expert is the one whose routing probability on the forget set most exceeds
    its probability on the retain set (computed here from the target). Only that expert's slice
    of the fused expert tensors and that layer's router change; every other expert's slice is
    bit for bit the target's; the forget set is forgotten. A dense model is refused by name."""
    out = _unlearn(memorised_moe, tmp_path / "uoe", "uoe")
    log = ob.models.read_provenance(out)["last_log"]
    layer, expert = int(log["uoe_layer"]), int(log["uoe_expert"])
    forget, retain = _sets(memorised_moe)
    score = (_expert_probs(memorised_moe / "target", memorised_moe, "forget", retain)
             - _expert_probs(memorised_moe / "target", memorised_moe, "retain", retain))
    assert divmod(int(score.argmax()), score.shape[1]) == (layer, expert)
    # as loaded (the files keep Mixtral's per-expert checkpoint names; the model fuses them)
    before, after = (load_model(str(p))[0].state_dict() for p in (memorised_moe / "target", out))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    prefix = f"model.layers.{layer}.mlp."
    assert changed <= {prefix + "experts.gate_up_proj", prefix + "experts.down_proj", prefix + "gate.weight"}
    assert prefix + "experts.down_proj" in changed
    for k in (prefix + "experts.gate_up_proj", prefix + "experts.down_proj"):
        others = [e for e in range(before[k].shape[0]) if e != expert]
        assert torch.equal(before[k][others], after[k][others])
    forget, _ = _sets(memorised_moe)
    model, tok = load_model(str(out))
    target, _ = load_model(str(memorised_moe / "target"))
    ctx = _context(tok, forget, [], ("forget",), DEFAULT_TEMPLATE, False, 0)
    assert mean_answer_prob(model, ctx.items["forget"], tok.pad_token_id) < 0.5 * mean_answer_prob(
        target, ctx.items["forget"], tok.pad_token_id)


@pytest.mark.slow
def test_uoe_anchor_keeps_the_forget_set_routed_to_its_expert(memorised_moe, tmp_path):
    """The router learns from the anchor alone (the base loss reaches it detached), so the
    chosen expert's share of the forget tokens does not fall below the target's. Without the
    anchor (anchor=0) the router is frozen and the share is whatever unlearning leaves, lower
    than with it."""
    held_run = _unlearn(memorised_moe, tmp_path / "a1", "uoe")
    log = ob.models.read_provenance(held_run)["last_log"]
    layer, expert = int(log["uoe_layer"]), int(log["uoe_expert"])
    free = _expert_probs(_unlearn(memorised_moe, tmp_path / "a0", "uoe", params={"anchor": 0.0}),
                         memorised_moe, "forget")[layer, expert]
    held = _expert_probs(held_run, memorised_moe, "forget")[layer, expert]
    before = _expert_probs(memorised_moe / "target", memorised_moe, "forget")[layer, expert]
    assert held >= before and held > free


@pytest.mark.slow
def test_uoe_refuses_what_it_cannot_do(memorised, tmp_path):
    """A dense model, LoRA (one slice of a fused tensor), and a base method that picks its own
    modules (the expert would not be the only part unlearning) are each refused by name."""
    with pytest.raises(ob.ObliviateError, match="needs a mixture-of-experts model"):
        _unlearn(memorised, tmp_path / "dense", "uoe", steps=2)
    with pytest.raises(ob.ObliviateError, match="lora.enabled does not apply"):
        _unlearn(memorised, tmp_path / "lora", "uoe", steps=2, lora=True)
    with pytest.raises(ob.ObliviateError, match="cannot wrap 'rmu'"):
        _unlearn(memorised, tmp_path / "rmu", "uoe", steps=2, params={"base": "rmu"})
    with pytest.raises(ob.ObliviateError, match="cannot wrap 'rmu'"):  # however deep it sits
        _unlearn(memorised, tmp_path / "deep", "uoe", steps=2,
                 params={"base": "sparse", "base_params": {"base": "rmu"}})
    with pytest.raises(ob.ObliviateError, match="wraps a training loop"):
        _unlearn(memorised, tmp_path / "slug", "sparse", steps=2, params={"base": "slug"})
    assert not any((tmp_path / n).exists() for n in ("dense", "lora", "rmu", "deep", "slug"))


@pytest.mark.slow
def test_masked_methods_refuse_weight_decay_and_ablation_keeps_its_adapters(memorised, memorised_moe, tmp_path):
    """A gradient mask freezes part of a tensor, which weight decay would still move: UOE (one
    expert's slice of fused tensors) and WAGLE refuse optim.weight_decay > 0. Concept ablation
    chooses which modules get adapters and refuses the user's list; on a model without
    `mlp.down_proj` modules (the tiny Mixtral's experts are fused tensors) it says so. Nothing
    is written."""
    def run(root, out, method, params=None, lora=None, decay=0.0):
        cfg = ob.UnlearnConfig(model=str(root / "target"), method=method, params=params or {},
                               benchmark=str(root / "bench"),
                               optim=OptimConfig(lr=None, steps=2, batch_size=16, weight_decay=decay))
        if lora is not None:
            cfg.lora.enabled, cfg.lora.target_modules = True, lora
        return ob.unlearn(cfg, tmp_path / out, progress=False)

    with pytest.raises(ob.ObliviateError, match="optim.weight_decay=0"):
        run(memorised_moe, "uoe", "uoe", decay=0.1)
    with pytest.raises(ob.ObliviateError, match="optim.weight_decay=0"):
        run(memorised, "wagle", "wagle", decay=0.1)
    with pytest.raises(ob.ObliviateError, match="remove lora.target_modules"):
        run(memorised, "ca-lora", "concept_ablation", lora=["down_proj"])
    with pytest.raises(ob.ObliviateError, match="no '\\*mlp.down_proj' modules"):
        run(memorised_moe, "ca-moe", "concept_ablation")
    assert not any((tmp_path / n).exists() for n in ("uoe", "wagle", "ca-lora", "ca-moe"))
