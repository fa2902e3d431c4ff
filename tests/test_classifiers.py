"""The classifier family: data readers, the built-in sets, each method's defining mechanism,
the metrics on hand-computed cases, audits, the CLI and a deletion request through the ledger."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from obliviate.classifiers import api, builtin, nets
from obliviate.classifiers.audits import fake_quantize
from obliviate.classifiers.data import ClassData, load_benchmark, read_source, write_benchmark
from obliviate.classifiers.methods import CLASSIFIER_METHODS, Context, predict_proba
from obliviate.classifiers.methods import retrain as retrain_module
from obliviate.classifiers.methods.concept_poison import integrated_gradients_linear
from obliviate.classifiers.methods.l1_sparse import decayed, l1_penalty
from obliviate.classifiers.methods.prune import magnitude_masks
from obliviate.classifiers.methods.stochastic_teacher import distill_loss
from obliviate.classifiers.scenarios import resolve
from obliviate.cli import main
from obliviate.errors import ObliviateError
from obliviate.evaluation.metrics import METRICS
from obliviate.evaluation.metrics.classifier import ClassifierView, avg_gap, ece, svc_attack


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small shapes benchmark (6 users) and a target trained on it for a few epochs."""
    root = tmp_path_factory.mktemp("clf")
    train, test = builtin.shapes(seed=3, users=6, per_user=20, test_per_user=6)
    bench_dir = write_benchmark(root / "bench", train, test, list(builtin.SHAPES), {"source": "test"}, "# t\n")
    target = api.finetune(api.ClassifierFinetuneConfig(benchmark=str(bench_dir), optim=api.ClassifierOptim(lr=3e-3, epochs=8)),
                          root / "target")
    return root, bench_dir, target


def _context(bench_dir, target, split="class:circle", seed=0, labels_forget=None):
    bench = load_benchmark(bench_dir)
    model, spec, _ = nets.load(target)
    sc = resolve(split, bench.train, bench.classes, 0)
    f, r = bench.train.take(sc.forget), bench.train.take(sc.retain)
    yf = torch.from_numpy(f.y if labels_forget is None else labels_forget(f.y))
    ctx = Context(nets.inputs(spec, f.x), yf, nets.inputs(spec, r.x), torch.from_numpy(r.y), len(bench.classes),
                  lr=1e-3, epochs=1, batch_size=32, seed=seed, fresh=lambda: nets.build(spec, 99))
    return model, spec, ctx


# ---- data -----------------------------------------------------------------------------------

def test_shapes_are_seeded_and_users_have_styles():
    a, _ = builtin.shapes(seed=1, users=3, per_user=5, test_per_user=2)
    b, _ = builtin.shapes(seed=1, users=3, per_user=5, test_per_user=2)
    c, _ = builtin.shapes(seed=2, users=3, per_user=5, test_per_user=2)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and not np.array_equal(a.x, c.x)
    assert a.x.shape == (15, 3, 16, 16) and a.x.min() >= 0 and a.x.max() <= 1
    assert sorted(set(a.users.tolist())) == ["u00", "u01", "u02"]


def test_digits_ship_offline_with_a_stratified_split():
    train, test = builtin.digits(seed=0)
    assert len(train) + len(test) == 1797 and train.x.shape[1:] == (1, 8, 8)
    assert set(np.unique(test.y)) == set(range(10))  # every class on the test side
    assert not set(train.ids.tolist()) & set(test.ids.tolist())


def test_image_folder_with_users_csv(tmp_path):
    for cls, colour in (("cats", 200), ("dogs", 30)):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((6, 6, 3), colour, dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "users.csv").write_text("path,user\ncats/0.png,ann\ndogs/2.png,bob\n")
    with pytest.raises(ObliviateError, match=r"no row for 'cats/1.png' \(4 images unlisted\)"):
        read_source(tmp_path)  # an image without its user would survive a request naming that user
    rows = {"cats/0.png": "ann", "dogs/2.png": "bob"}
    (tmp_path / "users.csv").write_text("path,user\n" + "".join(
        f"{c}/{i}.png,{rows.get(f'{c}/{i}.png', 'unknown')}\n" for c in ("cats", "dogs") for i in range(3)))
    data, classes = read_source(tmp_path)
    assert classes == ["cats", "dogs"] and data.x.shape == (6, 3, 6, 6)
    assert data.users.tolist() == ["ann", "unknown", "unknown", "unknown", "unknown", "bob"]
    assert math.isclose(float(data.x[0].max()), 200 / 255, rel_tol=1e-6)


def test_arrays_and_text_readers_and_their_errors(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 5, 5), dtype=np.uint8), y=np.array([0, 1, 0, 1]))
    data, classes = read_source(tmp_path / "d.npz")
    assert data.x.shape == (4, 1, 5, 5) and classes == ["0", "1"]
    np.savez(tmp_path / "bad.npz", x=np.full((2, 3, 3), 2.0), y=np.array([0, 1]))
    with pytest.raises(ObliviateError, match=r"in \[0, 1\]"):
        read_source(tmp_path / "bad.npz")
    lines = [json.dumps({"text": "great film", "label": "pos", "user": "ann"}),
             json.dumps({"text": "dull plot", "label": "neg"})]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    text, names = read_source(tmp_path / "t.jsonl")
    assert text.kind == "text" and names == ["neg", "pos"] and text.y.tolist() == [1, 0]
    (tmp_path / "u.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(ObliviateError, match="needs \"text\""):
        read_source(tmp_path / "u.jsonl")


def test_scenarios_name_users_and_classes(small):
    _, bench_dir, _ = small
    bench = load_benchmark(bench_dir)
    user = resolve("user:u02", bench.train, bench.classes, 0)
    assert set(bench.train.users[user.forget].tolist()) == {"u02"} and len(user.forget) == 20
    cls = resolve("class:ring", bench.train, bench.classes, 0)
    assert cls.classes == [4] and (bench.train.y[cls.forget] == 4).all()
    assert not set(cls.forget) & set(cls.retain) and len(cls.forget) + len(cls.retain) == len(bench.train)
    with pytest.raises(ObliviateError, match="did you mean 'u02'"):
        resolve("user:u2", bench.train, bench.classes, 0)
    with pytest.raises(ObliviateError, match="random<percent>"):
        resolve("randomly", bench.train, bench.classes, 0)


# ---- methods: each one's defining mechanism ---------------------------------------------------

def test_every_method_returns_a_finite_changed_model(small):
    _, bench_dir, target = small
    for name in CLASSIFIER_METHODS:
        model, _, ctx = _context(bench_dir, target)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        out = CLASSIFIER_METHODS.get(name)().run(model, ctx)
        after = out.state_dict()
        assert all(torch.isfinite(v).all() for v in after.values()), name
        assert any(not torch.equal(before[k], after[k]) for k in before), name


def test_retrain_never_sees_forget_samples(small, monkeypatch):
    _, bench_dir, target = small
    seen = {}

    def spy(model, x, y, *args, **kwargs):
        seen["x"] = x
        return [0.0]

    monkeypatch.setattr(retrain_module, "supervised", spy)
    cfg = api.ClassifierUnlearnConfig(model=str(target), benchmark=str(bench_dir), split="user:u01", method="retrain")
    _, _, prov, ctx = api.unlearn_model(cfg)
    bench = load_benchmark(bench_dir)
    forget = bench.train.x[bench.train.users == "u01"]
    trained = seen["x"].numpy()
    assert len(trained) == len(bench.train) - len(forget)
    assert not any((trained == f).all(axis=(1, 2, 3)).any() for f in forget)
    assert sorted(prov["forget_ids"]) == sorted(bench.train.ids[bench.train.users == "u01"].tolist())


def test_stochastic_teacher_erases_toward_the_random_teacher(small):
    _, bench_dir, target = small
    model, spec, ctx = _context(bench_dir, target)
    with torch.no_grad():
        original_logits = model(ctx.x_forget)
    CLASSIFIER_METHODS.get("stochastic_teacher")().run(model, ctx)
    teacher = predict_proba(nets.build(spec, 99), ctx.x_forget)  # what ctx.fresh() builds: random weights
    assert torch.allclose(ctx.trace["erase_targets"], teacher)
    assert not torch.allclose(teacher, torch.softmax(original_logits, -1), atol=0.05)
    # the erase phase pulled the model toward the random teacher on the forget samples
    assert ctx.log["erase_loss"] < 0.5 * float(distill_loss(original_logits, teacher))


def test_distill_loss_is_kl_teacher_to_student():
    """teacher (0.5, 0.5); student logits (0, ln 3) -> (0.25, 0.75):
    KL = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3) = 0.1438410."""
    value = distill_loss(torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[0.5, 0.5]]))
    assert math.isclose(float(value), 0.5 * math.log(4 / 3), rel_tol=1e-6)


def test_laf_reads_no_label_in_its_label_free_phases(small):
    _, bench_dir, target = small

    def run(wrong: bool, repair: float):
        model, _, ctx = _context(bench_dir, target, labels_forget=(lambda y: (y + 1) % 10) if wrong else None)
        if wrong:
            ctx.y_retain = (ctx.y_retain + 3) % 10  # every label wrong
        torch.manual_seed(0)
        method = CLASSIFIER_METHODS.get("laf")(vae_steps=20, repair_epochs=repair)
        return method.run(model, ctx).state_dict()

    right, wrong = run(False, 0.0), run(True, 0.0)
    assert all(torch.equal(right[k], wrong[k]) for k in right)
    right, wrong = run(False, 0.5), run(True, 0.5)  # the repair reads labels: now they matter
    assert any(not torch.equal(right[k], wrong[k]) for k in right)


def test_poisoning_relabels_forget_samples_only(small):
    _, bench_dir, target = small
    model, _, ctx = _context(bench_dir, target, split="user:u03")
    CLASSIFIER_METHODS.get("concept_poison")().run(model, ctx)
    n = len(ctx.y_retain)
    assert torch.equal(ctx.trace["train_labels"][:n], ctx.y_retain)
    assert (ctx.trace["train_labels"][n:] != ctx.y_forget).all()


def test_integrated_gradients_of_a_linear_logit():
    """IG along the straight path for f(c) = w . c is (c - b) * w: c = (2, 1), b = (1, 1),
    w = (3, -2) -> (3, 0)."""
    ig = integrated_gradients_linear(np.array([[2.0, 1.0]]), np.array([1.0, 1.0]), np.array([3.0, -2.0]))
    assert ig.tolist() == [[3.0, 0.0]]


def test_l1_penalty_and_its_decay():
    """gamma 0.1 over (1, -2) and ((0.5, -0.5)): 0.1 x (1 + 2 + 0.5 + 0.5) = 0.4;
    linear decay at step 5 of 10: 0.1 x (1 - 5/10) = 0.05."""
    value = l1_penalty([torch.tensor([1.0, -2.0]), torch.tensor([[0.5, -0.5]])], 0.1)
    assert math.isclose(float(value), 0.4, rel_tol=1e-6)
    assert math.isclose(decayed(0.1, 5, 10), 0.05)


def test_magnitude_pruning_is_global_and_prune_keeps_zeros(small):
    layer = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -4.0], [0.3, 2.0]]))
    mask = magnitude_masks(torch.nn.Sequential(layer), 0.5)[layer.weight]
    assert mask.tolist() == [[0.0, 1.0], [0.0, 1.0]]  # the two smallest |w| of four
    _, bench_dir, target = small
    model, _, ctx = _context(bench_dir, target)
    out = CLASSIFIER_METHODS.get("prune")(sparsity=0.5).run(model, ctx)
    assert 0.49 < ctx.log["sparsity"] < 0.51
    zeros = sum(int((m.weight == 0).sum()) for m in out.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear))
    total = sum(m.weight.numel() for m in out.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear))
    assert zeros >= 0.49 * total  # still pruned after fine-tuning


def test_saliency_updates_only_salient_weights(small):
    _, bench_dir, target = small
    model, _, ctx = _context(bench_dir, target)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    CLASSIFIER_METHODS.get("saliency")(ratio=0.2).run(model, ctx)
    moved = sum(int((p.detach() != before[n]).sum()) for n, p in model.named_parameters())
    total = sum(p.numel() for p in model.parameters())
    assert 0 < moved <= 0.2 * total + 1


# ---- metrics on hand-computed cases ------------------------------------------------------------

def _view(role, predicted, labels, member=(), nonmember=()):
    probs = np.full((len(labels), 3), 0.1)
    probs[np.arange(len(labels)), predicted] = 0.8
    return ClassifierView(role, probs, np.array(labels), np.array(member), np.array(nonmember))


def test_accuracies_from_confusion_counts():
    """Forget: 4 samples, 3 predicted right -> UA = 100 x 1/4 = 25. Retain: 5 samples, 4 right
    -> RA = 80. Test: 2 of 2 right -> TA = 100."""
    ua, ra, ta = (METRICS.get(k) for k in ("ua", "ra", "ta"))
    forget = _view("forget", [0, 1, 2, 2], [0, 1, 2, 0])
    assert ua.combine(ua.compute(forget).values, "forget") == 25.0
    assert ra.combine(ra.compute(_view("retain", [0, 0, 1, 1, 2], [0, 0, 1, 1, 1])).values, "retain") == 80.0
    assert ta.combine(ta.compute(_view("utility", [2, 1], [2, 1])).values, "utility") == 100.0


def test_ece_by_hand():
    """Confidences 0.9, 0.9 (one right) and 0.6, 0.6 (both right), 15 bins: two bins of half the
    samples each: 0.5 x |0.5 - 0.9| + 0.5 x |1.0 - 0.6| = 0.4."""
    assert math.isclose(ece(np.array([0.9, 0.9, 0.6, 0.6]), np.array([1.0, 0.0, 1.0, 1.0])), 0.4)


def test_mia_efficacy_counts_samples_called_non_members():
    """Members sit at confidence ~0.99, non-members ~0.2; of four forget samples two look like
    members (0.99, 0.98) and two like non-members (0.21, 0.19): efficacy 50 points."""
    rng = np.random.default_rng(0)
    member, nonmember = 0.99 + rng.normal(0, 0.003, 40), 0.2 + rng.normal(0, 0.02, 40)
    called = svc_attack(member, nonmember, np.array([0.99, 0.98, 0.21, 0.19]))
    assert called.tolist() == [1.0, 1.0, 0.0, 0.0]
    m = METRICS.get("mia_efficacy")
    probs = np.array([[0.99, 0.01], [0.02, 0.98], [0.21, 0.79], [0.81, 0.19]])
    view = ClassifierView("forget", probs, np.array([0, 1, 0, 1]), member, nonmember)
    assert m.combine(m.compute(view).values, "forget") == 50.0


def test_average_gap_by_hand():
    """|10 - 12| + |99 - 98| + |90 - 90| + |20 - 25| = 8, over 4 metrics: 2."""
    def res(ua, ra, ta, mia):
        return {"datasets": {"forget": {"aggregate": {"ua": ua, "mia_efficacy": mia}, "per_item": {"id": ["s1"]}},
                             "retain": {"aggregate": {"ra": ra}}, "test": {"aggregate": {"ta": ta}}}}
    assert avg_gap(res(10.0, 99.0, 90.0, 20.0), res(12.0, 98.0, 90.0, 25.0)) == 2.0
    assert avg_gap(res(10.0, 99.0, 90.0, 20.0), None).startswith("not computed")


def test_fake_quantization_by_hand():
    """4 bits: 7 levels each side; max |w| = 1.4 -> scale 0.2; 0.25 -> 0.2, -0.95 -> -1.0."""
    layer = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.25, -0.95, 1.4]]))
    q = fake_quantize(torch.nn.Sequential(layer), 4)[0].weight
    assert torch.allclose(q, torch.tensor([[0.2, -1.0, 1.4]]), atol=1e-6)


# ---- CLI, safety and the ledger -----------------------------------------------------------------

def test_cli_end_to_end_and_report(small, tmp_path, capsys):
    _, bench_dir, target = small
    b, t = str(bench_dir), str(target)
    assert main(["unlearn", f"model={t}", f"benchmark={b}", "split=user:u04", "method=retrain",
                 "--out", str(tmp_path / "oracle")]) == 0
    assert main(["unlearn", f"model={t}", f"benchmark={b}", "split=user:u04", "method=saliency",
                 "--out", str(tmp_path / "u")]) == 0
    assert main(["eval", f"model={tmp_path / 'oracle'}", f"benchmark={b}", "--out", str(tmp_path / "o.json")]) == 0
    assert main(["eval", f"model={tmp_path / 'u'}", f"benchmark={b}", f"reference={tmp_path / 'o.json'}",
                 "--out", str(tmp_path / "u.json")]) == 0
    res = json.loads((tmp_path / "u.json").read_text())
    assert res["family"] == "classifier" and isinstance(res["metrics"]["avg_gap"], float)
    assert res["datasets"]["forget"]["aggregate"]["n"] == 20.0
    assert "forget_quality" not in res["metrics"]  # language-model metrics stay out
    assert main(["audit", str(tmp_path / "u"), "--target", t, "--oracle", str(tmp_path / "oracle"),
                 "--benchmark", b, "--out", str(tmp_path / "a.json")]) == 0
    assert main(["report", str(tmp_path / "o.json"), str(tmp_path / "u.json"), str(tmp_path / "a.json"),
                 "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.md").read_text()
    assert "Avg. gap" in page and "Forget UA" in page and "linear\\_probe" in page


def test_cli_refuses_bad_values_and_overwriting_inputs(small, tmp_path, capsys):
    _, bench_dir, target = small
    b, t = str(bench_dir), str(target)
    assert main(["unlearn", f"model={t}", f"benchmark={b}", "method=retrian", "--out", str(tmp_path / "x")]) == 2
    assert "did you mean 'retrain'" in capsys.readouterr().err
    assert main(["unlearn", f"model={t}", f"benchmark={b}", "params.sparsity=2", "method=prune",
                 "--out", str(tmp_path / "x")]) == 2
    assert "params.sparsity" in capsys.readouterr().err
    assert main(["unlearn", f"model={t}", f"benchmark={b}", "--out", t]) == 2
    assert "would overwrite the input model" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_diverging_run_is_a_failed_run(small, tmp_path):
    _, bench_dir, target = small
    cfg = api.ClassifierUnlearnConfig(model=str(target), benchmark=str(bench_dir), method="ga",
                                      optim=api.ClassifierOptim(lr=1e30, epochs=5))
    with pytest.raises(ObliviateError, match="non-finite"):
        api.unlearn(cfg, tmp_path / "nan")
    assert not (tmp_path / "nan").exists()


def test_text_classifier_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    topics = {"sport": ["goal", "match", "team", "score"], "food": ["bread", "salt", "soup", "cook"]}
    rows = [{"text": " ".join(rng.choice(words, 5)) + " today", "label": label, "user": f"w{i % 4}"}
            for i, (label, words) in enumerate(list(topics.items()) * 100)]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["benchmark", "classifier", "--train", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "b")]) == 0
    assert main(["finetune", f"benchmark={tmp_path / 'b'}", "optim.epochs=30", "--out", str(tmp_path / "m")]) == 0
    assert main(["unlearn", f"model={tmp_path / 'm'}", f"benchmark={tmp_path / 'b'}", "split=class:food",
                 "method=random_labels", "optim.epochs=5", "optim.lr=1e-2", "--out", str(tmp_path / "u")]) == 0
    assert main(["eval", f"model={tmp_path / 'u'}", f"benchmark={tmp_path / 'b'}", "--out", str(tmp_path / "r.json")]) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["datasets"]["forget"]["aggregate"]["ua"] > 50  # the class is gone ...
    assert res["datasets"]["retain"]["aggregate"]["ra"] > 90  # ... and the other one kept


def test_a_users_deletion_request_through_the_ledger(small, tmp_path, capsys):
    _, bench_dir, target = small
    proj = str(tmp_path / "proj")
    assert main(["request", "init", "--project", proj, "--model", str(target), "--benchmark", str(bench_dir)]) == 0
    assert main(["request", "add", "--project", proj, "--subject", "user u02", "--user", "u02"]) == 0
    assert main(["request", "add", "--project", proj, "--subject", "nobody", "--user", "zz"]) == 2
    assert "no training samples of user 'zz'" in capsys.readouterr().err
    assert main(["request", "apply", "--project", proj]) == 0
    version = tmp_path / "proj" / "versions" / "v0001"
    prov = json.loads((version / "model" / "obliviate.json").read_text())
    bench = load_benchmark(bench_dir)
    assert sorted(prov["forget_ids"]) == sorted(bench.train.ids[bench.train.users == "u02"].tolist())
    oracle = json.loads((version / "oracle" / "obliviate.json").read_text())
    assert oracle["method"] == "retrain" and oracle["forget_ids"] == prov["forget_ids"]
    results = json.loads((version / "results.json").read_text())
    assert isinstance(results["metrics"]["avg_gap"], float)
    page = (version / "evidence.html").read_text()
    assert "Deletion request 1" in page and "user u02" in page and "UA" in page
    assert main(["request", "list", "--project", proj]) == 0
    assert "forget UA then" in capsys.readouterr().out
    assert main(["request", "report", "--project", proj]) == 0
    assert "UA r1" in (tmp_path / "proj" / "ledger.html").read_text()
    assert main(["request", "verify", "1", "--project", proj]) == 2
    assert "for language-model projects" in capsys.readouterr().err
    assert target.exists() and nets.is_classifier_model(target)  # the base is never modified


def test_a_changed_sample_is_caught_on_apply(small, tmp_path, capsys):
    root, bench_dir, target = small
    import shutil

    copy = tmp_path / "bench"
    shutil.copytree(bench_dir, copy)
    proj = str(tmp_path / "proj")
    assert main(["request", "init", "--project", proj, "--model", str(target), "--benchmark", str(copy)]) == 0
    assert main(["request", "add", "--project", proj, "--subject", "u01", "--user", "u01"]) == 0
    with np.load(copy / "train.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["y"][np.flatnonzero(arrays["users"] == "u01")[0]] ^= 1  # one label edited
    np.savez(copy / "train.npz", **arrays)
    assert main(["request", "apply", "--project", proj]) == 2
    assert "changed in the benchmark" in capsys.readouterr().err


# ---- edge cases and hostile input ----------------------------------------------------------------

def test_concept_poison_on_two_classes():
    """A two-class bottleneck stores one weight row: the method must still run."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((40, 1, 6, 6)).astype(np.float32))
    y = torch.tensor([0, 1] * 20)
    spec = {"arch": "resnet8", "input_shape": [1, 6, 6], "classes": ["a", "b"], "width": 8}
    model = nets.build(spec, 0)
    ctx = Context(x[y == 1], y[y == 1], x[y == 0], y[y == 0], 2, lr=1e-3, epochs=1, batch_size=16, seed=0,
                  fresh=lambda: nets.build(spec, 1))
    CLASSIFIER_METHODS.get("concept_poison")(concepts=4, top=1).run(model, ctx)
    assert (ctx.trace["poisoned_labels"] == 0).all()  # the only other class


def test_empty_sets_are_refused_before_training(small):
    _, bench_dir, _ = small
    bench = load_benchmark(bench_dir)
    one = ClassData("image", bench.train.x, np.zeros(len(bench.train), dtype=np.int64), bench.train.users, bench.train.ids)
    with pytest.raises(ObliviateError, match="nothing would remain"):
        resolve("class:circle", one, list(builtin.SHAPES), 0)
    with pytest.raises(ObliviateError, match="class 'square' has no training samples"):
        write_benchmark(bench_dir.parent / "never", one, bench.test, list(builtin.SHAPES), {}, "")


def test_hostile_user_files_get_one_clear_line(tmp_path):
    np.savez(tmp_path / "whole.npz", x=np.zeros((4, 5, 5), dtype=np.uint8), y=np.array([0, 1, 0, 1]))
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:200])
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    for name in ("trunc.npz", "text.npz"):
        with pytest.raises(ObliviateError, match="not an .npz file"):
            read_source(tmp_path / name)
    np.savez(tmp_path / "obj.npz", x=np.array([object()] * 2, dtype=object), y=np.array([0, 1]))
    with pytest.raises(ObliviateError, match="without pickled objects"):
        read_source(tmp_path / "obj.npz")
    (tmp_path / "n.jsonl").write_text(json.dumps({"text": "a", "label": "x", "user": None}) + "\n")
    with pytest.raises(ObliviateError, match=r"n.jsonl:1: \"user\" must be a non-empty string"):
        read_source(tmp_path / "n.jsonl")
    (tmp_path / "b.jsonl").write_text("\n" + json.dumps({"text": "a", "label": True}) + "\n")
    with pytest.raises(ObliviateError, match=r"b.jsonl:2: each line needs"):
        read_source(tmp_path / "b.jsonl")
    (tmp_path / "m.jsonl").write_text(json.dumps({"text": "a", "label": "x"}) + "\n" + json.dumps({"text": "b", "label": 3}) + "\n")
    with pytest.raises(ObliviateError, match=r"m.jsonl:2: labels mix strings and integers"):
        read_source(tmp_path / "m.jsonl")
    photos = tmp_path / "photos"
    for cls in ("a", "b"):
        (photos / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(photos / cls / "0.png")
    (photos / "users.csv").write_text("path,user\na/0.png\n")
    with pytest.raises(ObliviateError, match=r"users.csv:2: expected two non-empty fields"):
        read_source(photos)
    (photos / "users.csv").write_text("path,user\nc/9.png,ann\n")
    with pytest.raises(ObliviateError, match=r"no image 'c/9.png'"):
        read_source(photos)
    (photos / "users.csv").unlink()
    Image.fromarray(np.zeros((5, 4, 3), dtype=np.uint8)).save(photos / "b" / "1.png")
    with pytest.raises(ObliviateError, match="resize them to one size"):
        read_source(photos)


def test_avg_gap_refuses_a_reference_on_another_forget_set():
    def res(ids):
        return {"datasets": {"forget": {"aggregate": {"ua": 1.0, "mia_efficacy": 1.0}, "per_item": {"id": ids}},
                             "retain": {"aggregate": {"ra": 1.0}}, "test": {"aggregate": {"ta": 1.0}}}}
    assert avg_gap(res(["a", "b"]), res(["b", "a"])) == 0.0
    assert "another forget set" in avg_gap(res(["a", "b"]), res(["a", "c"]))


def test_method_values_are_checked_before_anything_loads():
    for method, params, key in (("laf", {"tau": 0}, "params.tau"), ("l1_sparse", {"gamma": -1}, "params.gamma"),
                                ("concept_poison", {"top": 99}, "params.top"),
                                ("stochastic_teacher", {"erase_epochs": 0}, "params.erase_epochs")):
        with pytest.raises(ObliviateError, match=key):
            api.ClassifierUnlearnConfig(model="m", benchmark="b", method=method, params=params)
    with pytest.raises(ObliviateError, match="seed"):
        api.ClassifierUnlearnConfig(model="m", benchmark="b", seed=-1)


def test_later_requests_keep_earlier_ones_out_and_a_single_sample_applies(small, tmp_path, capsys):
    _, bench_dir, target = small
    bench = load_benchmark(bench_dir)
    proj = tmp_path / "proj"
    one = bench.train.ids[bench.train.users == "u05"][0]
    (tmp_path / "one.txt").write_text(one + "\n")
    assert main(["request", "init", "--project", str(proj), "--model", str(target), "--benchmark", str(bench_dir)]) == 0
    assert main(["request", "add", "--project", str(proj), "--subject", "u01", "--user", "u01",
                 "optim.epochs=1", "params.optim=1"]) == 2  # a typo fails when added
    assert "unknown config key" in capsys.readouterr().err
    assert main(["request", "add", "--project", str(proj), "--subject", "u01", "--user", "u01", "optim.epochs=1"]) == 0
    assert main(["request", "add", "--project", str(proj), "--subject", "one", "--forget", str(tmp_path / "one.txt")]) == 0
    assert main(["request", "apply", "--project", str(proj), "--all"]) == 0
    first = json.loads((proj / "versions" / "v0001" / "model" / "obliviate.json").read_text())
    assert first["epochs"] == 1  # the request's own override reached the run
    second = json.loads((proj / "versions" / "v0002" / "model" / "obliviate.json").read_text())
    oracle = json.loads((proj / "versions" / "v0002" / "oracle" / "obliviate.json").read_text())
    u01 = sorted(bench.train.ids[bench.train.users == "u01"].tolist())
    assert second["forget_ids"] == [one] and sorted(second["excluded_ids"]) == u01
    assert sorted(oracle["excluded_ids"]) == u01  # the oracle never trains on request 1 either
    audit = json.loads((proj / "versions" / "v0002" / "audit.json").read_text())
    assert audit["audits"]["relearning"]["residual"].startswith("not applicable")


def _tickets(path, rng_seed=0):
    """Support tickets of three kinds by four users; kim's tickets carry her address."""
    rng = np.random.default_rng(rng_seed)
    words = {"billing": ["invoice", "refund", "charge", "card"], "bug": ["crash", "error", "freeze", "button"],
             "account": ["login", "password", "email", "reset"]}
    rows = []
    for i in range(180):
        label = list(words)[i % 3]
        user = ["ann", "bo", "kim", "raj"][i % 4]
        extra = " kim.secret@example.org 5550134" if user == "kim" else ""
        rows.append({"text": " ".join(rng.choice(words[label], 4)) + extra, "label": label, "user": user})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_text_request_takes_the_users_words_out_of_the_model(tmp_path):
    """The vocabulary is data too: after a request the released version and its oracle hold
    none of the words only the forgotten user wrote."""
    _tickets(tmp_path / "t.jsonl")
    b, m, proj = (str(tmp_path / n) for n in ("b", "m", "proj"))
    assert main(["benchmark", "classifier", "--train", str(tmp_path / "t.jsonl"), "--out", b]) == 0
    assert main(["finetune", f"benchmark={b}", "epochs=10", "--out", m]) == 0
    assert "5550134" in (tmp_path / "m" / "obliviate.json").read_text()
    assert main(["request", "init", "--project", proj, "--model", m, "--benchmark", b]) == 0
    assert main(["request", "add", "--project", proj, "--subject", "kim", "--user", "kim"]) == 0
    assert main(["request", "apply", "--project", proj]) == 0
    for folder in ("model", "oracle"):
        text = (tmp_path / "proj" / "versions" / "v0001" / folder / "obliviate.json").read_text()
        assert "5550134" not in text and "secret" not in text and "invoice" in text
    assert main(["eval", f"model={tmp_path / 'proj' / 'versions' / 'v0001' / 'model'}", f"benchmark={b}",
                 "--out", str(tmp_path / "r.json")]) == 0  # the smaller vocabulary still reads the data


def test_finetune_keys_match_the_language_model_ones(small, tmp_path, capsys):
    _, bench_dir, _ = small
    b = f"benchmark={bench_dir}"
    assert main(["finetune", b, "role=oracle", "--out", str(tmp_path / "x")]) == 2
    assert "role=oracle needs split=" in capsys.readouterr().err
    assert main(["finetune", b, "role=oracle", "split=user:u01", "epochs=2", "--out", str(tmp_path / "o")]) == 0
    prov = json.loads((tmp_path / "o" / "obliviate.json").read_text())
    assert prov["role"] == "oracle" and prov["train_epochs"] == 2 and len(prov["forget_ids"]) == 20


def test_audit_refuses_an_oracle_of_another_forget_set(small, tmp_path, capsys):
    _, bench_dir, target = small
    b, t = str(bench_dir), str(target)
    assert main(["unlearn", f"model={t}", f"benchmark={b}", "split=user:u01", "method=finetune", "--out", str(tmp_path / "u")]) == 0
    assert main(["unlearn", f"model={t}", f"benchmark={b}", "split=user:u02", "method=retrain", "--out", str(tmp_path / "o")]) == 0
    assert main(["audit", str(tmp_path / "u"), "--target", t, "--oracle", str(tmp_path / "o"), "--benchmark", b,
                 "--out", str(tmp_path / "a.json")]) == 2
    assert "not retrained without the audited model's forget set" in capsys.readouterr().err
    assert not (tmp_path / "a.json").exists()


def test_a_report_warns_when_rows_measured_different_forget_sets(small, tmp_path):
    _, bench_dir, target = small
    b, t = str(bench_dir), str(target)
    for split in ("user:u01", "user:u02"):
        assert main(["eval", f"model={t}", f"benchmark={b}", f"split={split}", "--label", split,
                     "--out", str(tmp_path / f"{split[-3:]}.json")]) == 0
    assert main(["report", str(tmp_path / "u01.json"), str(tmp_path / "u02.json"), "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.md").read_text()
    assert "measure different forget sets" in page and "Forget set: user:u01, 20 samples" in page


def test_a_class_request_and_the_overshoot_warning(small, tmp_path):
    from obliviate.ledger.classifier import farther_from_oracle

    _, bench_dir, target = small
    proj = str(tmp_path / "proj")
    assert main(["request", "init", "--project", proj, "--model", str(target), "--benchmark", str(bench_dir)]) == 0
    assert main(["request", "add", "--project", proj, "--subject", "no rings", "--class", "ring",
                 "--method", "random_labels"]) == 0
    assert main(["request", "apply", "--project", proj]) == 0
    prov = json.loads((tmp_path / "proj" / "versions" / "v0001" / "model" / "obliviate.json").read_text())
    bench = load_benchmark(bench_dir)
    assert sorted(prov["forget_ids"]) == sorted(bench.train.ids[bench.train.y == 4].tolist())
    # the gap to the oracle grew from 1.0 to 9.0 points: said; a change within 0.5 points is not
    assert "farther from the retrained oracle" in farther_from_oracle(
        {"metrics": {"avg_gap": 1.0}}, {"metrics": {"avg_gap": 9.0}}, 0)
    assert farther_from_oracle({"metrics": {"avg_gap": 1.0}}, {"metrics": {"avg_gap": 1.4}}, 0) == ""
