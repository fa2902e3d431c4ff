"""Robustness audits on the tiny benchmark: each separates the target from the oracle, GA's
forgetting partly comes back under relearning, wrappers get prompt audits only."""

import json
import types

import pytest
import torch

import obliviate as ob
from obliviate.audits import AUDITS, AuditConfig, audit
from obliviate.audits.base import residual
from obliviate.audits.run import scores
from obliviate.audits.weights import round_weights


def test_four_bit_rounding_by_hand():
    """Row (1, -0.6, 0.3), 4 bits: 7 levels a side, scale = 1/7; w/scale = (7, -4.2, 2.1)
    rounds to (7, -4, 2), so the row becomes (1, -4/7, 2/7)."""
    lin = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -0.6, 0.3]]))
    round_weights(torch.nn.Sequential(lin), bits=4)
    assert lin.weight[0].tolist() == pytest.approx([1.0, -4 / 7, 2 / 7], rel=1e-6)


def test_residual_by_hand():
    """(m - m_oracle) / (m_target - m_oracle) with target 0.9 and oracle 0.1: a model at 0.3
    keeps (0.3 - 0.1) / 0.8 = 1/4 of the target's knowledge; at 0.9, all of it (1); at 0.1,
    none (0); at 0.05, below the oracle: -0.05 / 0.8 = -1/16. Target = oracle: no scale."""
    assert residual(0.3, 0.9, 0.1) == pytest.approx(0.25)
    assert residual(0.9, 0.9, 0.1) == pytest.approx(1.0)
    assert residual(0.1, 0.9, 0.1) == pytest.approx(0.0)
    assert residual(0.05, 0.9, 0.1) == pytest.approx(-1 / 16)
    assert residual(0.3, 0.4, 0.4).startswith("not computed")


def test_parametric_trace_measures_a_known_rotation(tmp_path):
    """Every column a of every MLP down-projection of a tiny model becomes
    b = 3 (a/2 + (sqrt(3)/2) |a| u), u a unit vector orthogonal to a: a rotation by 60 degrees
    and a stretch by 3. |b| = 3 |a| sqrt(1/4 + 3/4) = 3 |a| and a.b = 3 |a|^2 / 2, so
    cos = 1/2 and |b| / |a| = 3 whichever value vectors the trace picks. Against itself the
    target reads 1 and 1."""
    import copy

    from obliviate.audits.base import AuditData
    from obliviate.audits.latent import ParametricTrace
    from obliviate.data import Example
    from obliviate.models import TinyModelConfig, build_tiny_model, save_model, train_tokenizer

    forget = [Example(question="Where does Ana live?", answer="Ana lives in Tula."),
              Example(question="What does Bo do?", answer="Bo repairs clocks.")]
    tok = train_tokenizer([t for ex in forget for t in (ex.question, ex.answer)], vocab_size=300)
    target = build_tiny_model(tok, TinyModelConfig(layers=2, hidden=32, heads=2, intermediate=64), seed=0)
    save_model(target, tok, tmp_path / "target", {"test": True})
    moved = copy.deepcopy(target)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, mod in moved.named_modules():
            if name.endswith("mlp.down_proj"):
                a = mod.weight  # [d, intermediate]: one value vector per column
                r = torch.randn_like(a)
                u = r - (r * a).sum(0) / (a * a).sum(0) * a
                u = u / u.norm(dim=0)
                a.copy_(3 * (0.5 * a + (3 ** 0.5 / 2) * a.norm(dim=0) * u))
    data = AuditData(forget=forget, retain=[])
    trace = ParametricTrace(target=str(tmp_path / "target"))
    out = trace.run(moved, tok, data)
    assert out["cosine"] == pytest.approx(0.5, abs=1e-5) and out["score"] == out["cosine"]
    assert out["norm_ratio"] == pytest.approx(3.0, rel=1e-5)
    same = trace.run(target, tok, data)  # plumbing: the target against itself
    assert same["cosine"] == pytest.approx(1.0) and same["norm_ratio"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def ends(memorised_oracle):
    root = memorised_oracle
    cfg = AuditConfig(model=str(root / "target"), target=str(root / "target"),
                      oracle=str(root / "oracle"), benchmark=str(root / "bench"))
    cache = {}
    res = audit(cfg, ends=cache, progress=False)
    return root, cache, res


@pytest.mark.slow
def test_every_audit_separates_target_from_oracle(ends):
    """The raw headline number of each audit is far higher for the target (which learned the
    forget people) than for the oracle (which never did); the target audited against itself
    scores exactly 1."""
    _, cache, res = ends
    assert set(res["audits"]) == set(AUDITS.names())
    for name in AUDITS.names():
        t, o = cache["target"][name]["score"], cache["oracle"][name]["score"]
        assert t - o > 0.15, f"{name}: target {t:.3f} vs oracle {o:.3f}"
    assert all(v == pytest.approx(1.0) for v in scores(res).values())  # plumbing (by hand above)


@pytest.mark.slow
def test_relearning_brings_back_what_gradient_ascent_hid(ends, tmp_path):
    """GA with its defaults (stopped once the forget set's probability halved), then 20 steps
    on a quarter of the forget set: the other three quarters come back measurably."""
    root, cache, _ = ends
    ga = ob.unlearn(ob.UnlearnConfig(model=str(root / "target"), method="ga",
                                     benchmark=str(root / "bench")), tmp_path / "ga", progress=False)
    res = audit(AuditConfig(model=str(ga), target=str(root / "target"), oracle=str(root / "oracle"),
                            benchmark=str(root / "bench"), audits=["relearning"]),
                ends=cache, progress=False)
    raw = res["audits"]["relearning"]["model"]
    assert raw["forget_k20"] > raw["before"] + 0.05
    assert 0 < res["audits"]["relearning"]["residual"]["score"]
    assert {"unrelated_k5", "unrelated_k10", "unrelated_k20"} <= set(raw)  # the third curve ran
    few = cache["target"]["few_shot"]  # recovery factor: 5-shot over 0-shot knowledge
    assert few["recovery_factor"] == pytest.approx(few["5_shot"] / few["0_shot"])


@pytest.mark.slow
def test_logit_lens_probe_and_parametric_trace_read_the_internals(ends):
    """The target read against itself: every value vector unmoved (cosine 1, norm ratio 1);
    the logit lens's last layer is the model's own output, so it equals the plain answer
    probability the rephrase audit reports as 'original'."""
    _, cache, _ = ends
    trace = cache["target"]["parametric_trace"]
    # plumbing: a known rotation is measured in test_parametric_trace_measures_a_known_rotation
    assert trace["cosine"] == pytest.approx(1.0) and trace["norm_ratio"] == pytest.approx(1.0)
    lens = cache["target"]["logit_lens"]
    last = max(int(k.split("_")[1]) for k in lens if k.startswith("layer_"))
    assert lens[f"layer_{last}"] == pytest.approx(cache["target"]["rephrase"]["original"], rel=1e-4)
    assert cache["oracle"]["parametric_trace"]["cosine"] < 0.9  # trained apart: vectors differ
    # the tuned-lens probe, trained on the target's retain states, reads the first layer
    # better than the untrained logit lens does
    assert cache["target"]["latent_probe"]["layer_1"] > cache["target"]["logit_lens"]["layer_1"]


@pytest.mark.slow
def test_wrappers_get_prompt_audits_and_a_reason_for_the_rest(ends):
    from obliviate.audits.run import audit_data, run_one
    from obliviate.models import load_model

    root, _, _ = ends
    model, tok = load_model(root / "target")

    class Wrapper(torch.nn.Module):  # forward-only, as an inference-time method
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask):
            return types.SimpleNamespace(logits=self.inner(input_ids=input_ids,
                                                           attention_mask=attention_mask).logits)

    data = audit_data(AuditConfig(benchmark=str(root / "bench")))
    assert "score" in run_one(AUDITS.get("rephrase")(), (Wrapper(), tok), data)
    out = run_one(AUDITS.get("quantization")(), (Wrapper(), tok), data)
    assert "forward() only" in out["not_applicable"]


@pytest.mark.slow
def test_audit_cli(ends, tmp_path, capsys):
    from obliviate.cli import main

    root, _, _ = ends
    out = tmp_path / "audit.json"
    assert main(["audit", str(root / "oracle"), "--out", str(out), "--target", str(root / "target"),
                 "--oracle", str(root / "oracle"), f"benchmark={root / 'bench'}",
                 "audits=rephrase,few_shot"]) == 0
    res = json.loads(out.read_text())
    assert res["schema"] == "obliviate.audit/1" and set(res["audits"]) == {"rephrase", "few_shot"}
    assert scores(res) == {"rephrase": 0.0, "few_shot": 0.0}
    assert "residual" in capsys.readouterr().out
    assert main(["audit", str(root / "oracle"), "--out", str(out), "audits=rephrase"]) == 2
    assert main(["ls", "audits"]) == 0 and "relearning" in capsys.readouterr().out


@pytest.mark.slow
def test_report_gains_an_audit_section(ends, tmp_path):
    """Results and audit files together: the table, the residual bar chart and the relearning
    curves, with model names escaped."""
    from obliviate.cli import main
    from obliviate.evaluation import save_results

    root, cache, _ = ends
    res = audit(AuditConfig(model=str(root / "oracle"), target=str(root / "target"),
                            oracle=str(root / "oracle"), benchmark=str(root / "bench"),
                            audits=["rephrase", "relearning"]), ends=cache, progress=False)
    res["name"] = "<oracle>"
    (tmp_path / "audit.json").write_text(json.dumps(res))
    ev = ob.evaluate(ob.EvalConfig(model=str(root / "oracle"), benchmark=str(root / "bench")),
                     name="oracle", progress=False)
    save_results(ev, tmp_path / "oracle.json")
    assert main(["report", str(tmp_path / "oracle.json"), str(tmp_path / "audit.json"),
                 "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Robustness audits" in page and page.count("<svg") == 3  # scatter, bars, relearning
    assert "&lt;oracle&gt;" in page and "<oracle>" not in page
    assert "## Robustness audits" in (tmp_path / "report" / "report.md").read_text()


def test_unrelated_relearning_data_names_no_forget_entity():
    """Entity labels: items about a forget or related person go, and so does an item that
    names a forget person in its text; without labels, any item sharing a word of three
    capitalised word (a name) with a forget item goes."""
    from obliviate.audits.weights import unrelated_items
    from obliviate.data import Example

    forget = [Example(question="Where does Ann Lee work?", answer="At the mill.", entity="Ann Lee")]
    related = [Example(question="Who is Bo Lin's sister?", answer="Ann Lee.", entity="Bo Lin")]
    retain = [Example(question="Where does Cy Roe work?", answer="At the port.", entity="Cy Roe"),
              Example(question="Who taught Dee Fox?", answer="Ann Lee did.", entity="Dee Fox"),
              Example(question="What does Bo Lin grow?", answer="Figs.", entity="Bo Lin"),
              Example(question="Where was Ann Lee born?", answer="In Hull.", entity="Ann Lee")]
    kept = unrelated_items(forget, retain, related)
    assert [ex.entity for ex in kept] == ["Cy Roe"]
    assert not {ex.entity for ex in kept} & {ex.entity for ex in forget + related}
    bare = [Example(question=ex.question, answer=ex.answer) for ex in retain]
    # the names are Ann and Lee: the second and fourth items name them
    assert unrelated_items([Example(question="Where does Ann Lee work?", answer="x")], bare, []) == \
        [bare[0], bare[2]]
