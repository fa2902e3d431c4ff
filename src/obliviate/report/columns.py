"""Which numbers a page shows, and how they are titled: all from the metric registry, so a
new metric appears in reports and evidence pages without touching them.

Keys are those of `results['metrics']`: `<dataset>_<aggregate>` for dataset metrics
(forget_prob, world_facts_rougeL_recall, mia_auc_min_k) and the bare name for derived ones
(forget_quality). A column is a (key, title, direction) triple.
"""

from __future__ import annotations

from typing import Any

from ..evaluation.metrics import in_order, lookup

Column = tuple[str, str, str]
# datasets whose metrics carry their own full titles ("MIA AUC, LOSS")
_SELF_TITLED = ("mia", "muse")


def dataset_title(name: str, role: str) -> str:
    if role in _SELF_TITLED:
        return role.upper()
    return name.replace("_", " ").capitalize()


def _datasets(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(name, role) of every dataset in any of the results: the benchmark's own sets, then those
    reported beside them (dependent queries, rwku probes); each group forget first, in order
    seen."""
    seen: dict[str, tuple[str, bool]] = {}
    for res in rows:
        for name, d in res.get("datasets", {}).items():
            seen.setdefault(name, (d["role"], d.get("aggregated", True)))
    order = {"forget": 0, "retain": 1, "utility": 2}
    ranked = sorted(seen.items(), key=lambda kv: (not kv[1][1], order.get(kv[1][0], 3)))
    return [(name, role) for name, (role, _) in ranked]


def _aggregate_keys(rows: list[dict[str, Any]], dataset: str) -> list[str]:
    """The aggregates of `dataset` in any of the results: registered metrics in registry
    order, then any others (from a newer or older obliviate) as they come."""
    present: list[str] = []
    for res in rows:
        for key in res.get("datasets", {}).get(dataset, {}).get("aggregate", {}):
            if key not in present:
                present.append(key)
    known = [m.name for m in in_order() if m.name in present]
    return known + [k for k in present if k not in known]


def dataset_column(dataset: str, role: str, key: str) -> Column:
    title, arrow = lookup(key, role)
    prefix = "" if role in _SELF_TITLED else f"{dataset_title(dataset, role)} "
    return f"{dataset}_{key}", prefix + title, arrow


def headline_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """The main table: the derived metrics with a number for any model (PrivLeak only once a
    mia suite ran), then each dataset's headline metrics (those whose registry entry names the
    dataset's role)."""
    cols: list[Column] = []
    for m in in_order("derived"):
        if "model" in m.headline and any(isinstance(res.get("metrics", {}).get(m.name), float)
                                         for res in rows):
            cols.append((m.name, m.title, m.arrow()))
    for name, role in _datasets(rows):
        keys = _aggregate_keys(rows, name)
        for m in in_order():
            if role in m.headline and m.name in keys:
                cols.append(dataset_column(name, role, m.name))
    return cols


def detail_tables(rows: list[dict[str, Any]]) -> list[tuple[str, list[Column]]]:
    """One table per dataset with every aggregate measured on it."""
    return [(dataset_title(name, role), [dataset_column(name, role, k)
                                         for k in _aggregate_keys(rows, name)])
            for name, role in _datasets(rows)]


def forget_rows(measured: dict[str, Any]) -> list[Column]:
    """The ledger's per-request numbers that were measured (forget_<metric>, the membership
    attacks' auc_<attack>, forget_quality), in registry order and titled from it; other
    numbers kept beside them (the audits') have their own section."""
    rank = {m.name: i for i, m in enumerate(in_order())}
    cols: list[tuple[int, Column]] = []
    for key in measured:
        name = key.removeprefix("forget_") if key != "forget_quality" else key
        if name in rank:
            title, arrow = lookup(name, "forget")
            cols.append((rank[name], (key, title, arrow)))
    return [c for _, c in sorted(cols)]


def key_title(key: str) -> str:
    """A reader's title for a `<dataset>_<metric>` or bare metric key."""
    if key in {m.name for m in in_order()}:
        return lookup(key)[0]
    for m in sorted(in_order(), key=lambda m: -len(m.name)):
        if key.endswith("_" + m.name):
            dataset = key[:-len(m.name) - 1]
            return f"{dataset.replace('_', ' ').capitalize()} {m.title}"
    return key
