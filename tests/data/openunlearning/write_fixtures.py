"""Writes the two OpenUnlearning TOFU_EVAL.json fixtures beside this file (see README.md):
per-item numbers chosen by hand, aggregated with OpenUnlearning's own formulas (its
src/evals/metrics/*.py at d3d7cf9) re-typed with the standard library and rouge-score only.
Nothing from obliviate is used. Run: python tests/data/openunlearning/write_fixtures.py"""

import json
import math
from pathlib import Path

from rouge_score import rouge_scorer

SCORER = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def probability(probs):
    """metrics/memorization.py::probability: {prob, avg_loss} per item, mean prob."""
    by_index = {str(i): {"prob": p, "avg_loss": -math.log(p)} for i, p in enumerate(probs)}
    return {"agg_value": sum(probs) / len(probs), "value_by_index": by_index}


def perturbed_probability(lists):
    """The same handler on a dataset with several perturbed answers: lists per item
    (metrics/utils.py::run_batchwise_evals, dict_transpose); aggregate_to_1D averages each."""
    by_index = {str(i): {"prob": list(ps), "avg_loss": [-math.log(p) for p in ps]}
                for i, ps in enumerate(lists)}
    means = [sum(ps) / len(ps) for ps in lists]
    return {"agg_value": sum(means) / len(means), "value_by_index": by_index}


def truth_ratio(correct, wrong, aggregator):
    """metrics/memorization.py::truth_ratio: wrong / correct from mean avg_losses."""
    scores = {}
    for i, entry in correct["value_by_index"].items():
        c = math.exp(-entry["avg_loss"])
        losses = wrong["value_by_index"][i]["avg_loss"]
        scores[i] = math.exp(-sum(losses) / len(losses)) / (c + 1e-10)
    if aggregator == "closer_to_1_better":
        agg = sum(min(s, 1 / (s + 1e-10)) for s in scores.values()) / len(scores)
    else:  # true_better
        agg = sum(max(0.0, 1 - s) for s in scores.values()) / len(scores)
    return {"agg_value": agg, "value_by_index": {i: {"score": s} for i, s in scores.items()}}


def probability_w_options(correct, wrong):
    """metrics/memorization.py::probability_w_options: c / (c + sum of wrong + 1e-10)."""
    values = {}
    for i, entry in correct["value_by_index"].items():
        c = entry["prob"]
        values[i] = {"prob": c / (c + sum(wrong["value_by_index"][i]["prob"]) + 1e-10)}
    return {"agg_value": sum(v["prob"] for v in values.values()) / len(values),
            "value_by_index": values}


def rouge(rows):
    """metrics/utils.py::eval_text_similarity; the metric's rouge_type is rougeL_recall."""
    by_index = {}
    for i, (question, truth, generation) in enumerate(rows):
        s = SCORER.score(truth, generation)
        by_index[str(i)] = {"rouge1_recall": s["rouge1"].recall, "rougeL_f1": s["rougeL"].fmeasure,
                            "rougeL_recall": s["rougeL"].recall,
                            "input": f"Question: {question}\nAnswer:", "ground_truth": truth,
                            "generation": generation}
    values = [v["rougeL_recall"] for v in by_index.values()]
    return {"agg_value": sum(values) / len(values), "value_by_index": by_index}


def scores_part(xs):
    return {"agg_value": sum(xs) / len(xs),
            "value_by_index": {str(i): {"score": x} for i, x in enumerate(xs)}}


def mia(forget_scores, holdout_scores):
    """metrics/mia/utils.py::mia_auc: roc_auc_score with forget labelled 0, holdout 1."""
    pairs = [(h > f) + 0.5 * (h == f) for f in forget_scores for h in holdout_scores]
    auc = sum(pairs) / len(pairs)
    return {"forget": scores_part(forget_scores), "holdout": scores_part(holdout_scores),
            "auc": auc, "agg_value": auc}


def perturbed(x, spread, para):
    """Two perturbed answers whose geometric mean probability is para * e^x, so that the
    truth ratio (wrong / correct) is e^x."""
    g = para * math.exp(x)
    return [g * spread, g / spread]


def forget_metrics(q_a, para, log_ratios, spreads, rows):
    para_prob = probability(para)
    pert = perturbed_probability([perturbed(x, s, c) for x, s, c in
                                  zip(log_ratios, spreads, para, strict=True)])
    return {"forget_Q_A_Prob": probability(q_a), "forget_Q_A_PARA_Prob": para_prob,
            "forget_Q_A_PERT_Prob": pert, "forget_Q_A_ROUGE": rouge(rows),
            "forget_truth_ratio": truth_ratio(para_prob, pert, "closer_to_1_better")}


QUESTIONS = [("Where does Ana live?", "Ana lives in Tula."),
             ("What does Bo do?", "Bo repairs old clocks."),
             ("What does Di teach?", "Di teaches music daily."),
             ("What does Ed write?", "Ed writes crime novels.")]

target = forget_metrics(
    [0.9, 0.8, 0.7, 0.6], [0.5] * 4, (-2.0, -1.5, -1.0, 0.0), (1.5, 1.2, 2.0, 1.0),
    [(*QUESTIONS[0], "Ana lives in Tula."), (*QUESTIONS[1], "Bo repairs old clocks in Riga."),
     (*QUESTIONS[2], "Di sings daily."), (*QUESTIONS[3], "Ed paints novels.")])
oracle = forget_metrics(
    [0.2, 0.1, 0.3, 0.2], [0.4, 0.3, 0.25, 0.2], (-0.5, 0.25, 0.5, 1.0), (1.1, 1.3, 1.0, 1.6),
    [(*QUESTIONS[0], "Ana lives in Oslo."), (*QUESTIONS[1], "Bo sells cars."),
     (*QUESTIONS[2], "Di teaches art."), (*QUESTIONS[3], "Ed writes poems.")])

retain_para = probability([0.5, 0.8])
retain_pert = perturbed_probability([[0.125, 0.125], [0.4, 0.1]])
target.update({
    "retain_Q_A_Prob": probability([0.9, 0.6]),
    "retain_Q_A_PARA_Prob": retain_para, "retain_Q_A_PERT_Prob": retain_pert,
    "retain_Truth_Ratio": truth_ratio(retain_para, retain_pert, "true_better"),
    "retain_Q_A_ROUGE": rouge([("Where does Cy live?", "Cy lives by sea", "Cy swims by boat"),
                               ("What is Fay's job?", "Fay flies cargo planes", "Fay flies")]),
})
UTILITY = {
    "ra": ([(0.5, [0.2, 0.05]), (0.2, [0.2, 0.2])],
           [("Who wrote Hamlet?", "William Shakespeare", "William Shakespeare"),
            ("Who wrote Emma?", "Jane Austen", "Jane Austen")]),
    "wf": ([(0.2, [0.2, 0.2]), (0.5, [0.2, 0.05])],
           [("Where is the Eiffel Tower?", "Paris", "Paris"),
            ("What is the capital of Peru?", "Lima city", "Lima")]),
}
for prefix, (items, rows) in UTILITY.items():
    correct = probability([c for c, _ in items])
    wrong = perturbed_probability([w for _, w in items])
    target.update({
        f"{prefix}_Q_A_Prob": correct, f"{prefix}_Q_A_PERT_Prob": wrong,
        f"{prefix}_Q_A_Prob_normalised": probability_w_options(correct, wrong),
        f"{prefix}_Q_A_ROUGE": rouge(rows),
        f"{prefix}_Truth_Ratio": truth_ratio(correct, wrong, "true_better"),
    })
PARTS = ["retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised",
         "ra_Q_A_ROUGE", "ra_Truth_Ratio", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio"]
values = [target[p]["agg_value"] for p in PARTS]
target["model_utility"] = {"agg_value": len(values) / sum(1 / v for v in values)}  # hm_aggregate
target["forget_quality"] = {"agg_value": 8 / 35}  # ks_test: exact two-sided p (README.md)
target["mia_min_k"] = mia([1.0, 2.0, 3.0, 6.0], [4.0, 5.0, 7.0, 2.5])
oracle["mia_min_k"] = mia([1.0, 2.0, 3.0, 6.0], [2.5, 4.0, 5.0, 0.5])
score, ref = 1 - target["mia_min_k"]["agg_value"], 1 - oracle["mia_min_k"]["agg_value"]
target["privleak"] = {"agg_value": (score - ref) / (ref + 1e-10) * 100}  # metrics/privacy.py
target["extraction_strength"] = scores_part([1.0, 1.0, 0.5, 0.25])

for name, logs in (("target", target), ("retain", oracle)):
    with open(Path(__file__).parent / f"{name}_TOFU_EVAL.json", "w") as f:
        json.dump(dict(sorted(logs.items())), f, indent=4)  # evals/base.py::Evaluator.save_logs
