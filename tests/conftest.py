import os

# No network anywhere in the suite: a stray hub call fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Each pytest-xdist worker takes its share of the cores. Left to torch's default (a thread per
# core in every worker), the workers' threads wait on each other: the fast suite took 84 s
# instead of 51 s with two workers on two cores. A count the user set is kept.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT", "").isdigit() and "OMP_NUM_THREADS" not in os.environ:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ["OMP_NUM_THREADS"] = str(max(1, (cores or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        raise FileNotFoundError(f"reference data expected beside the checkout at {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def memorised(tmp_path_factory):
    """A tiny model (2 layers, d=64) that has memorised a 20-person built-in benchmark, and
    that benchmark: the shared subject of the method contract tests (about 20 s to train)."""
    import obliviate as ob
    from obliviate.models import TinyModelConfig

    root = tmp_path_factory.mktemp("memorised")
    ob.generate(root / "bench", seed=1, entities=20)
    ob.finetune(ob.FinetuneConfig(benchmark=str(root / "bench"),
                                  tiny=TinyModelConfig(layers=2, hidden=64, intermediate=128),
                                  epochs=100, optim=ob.FinetuneOptim(lr=3e-3, batch_size=32)),
                root / "target", progress=False)
    return root


@pytest.fixture(scope="session")
def memorised_oracle(memorised):
    """The oracle of `memorised`: the same recipe without the forget10 people."""
    import obliviate as ob
    from obliviate.models import TinyModelConfig

    if not (memorised / "oracle").exists():
        ob.finetune(ob.FinetuneConfig(benchmark=str(memorised / "bench"), role="oracle",
                                      tiny=TinyModelConfig(layers=2, hidden=64, intermediate=128),
                                      epochs=100, optim=ob.FinetuneOptim(lr=3e-3, batch_size=32)),
                    memorised / "oracle", progress=False)
    return memorised


@pytest.fixture(scope="session")
def memorised_moe(tmp_path_factory):
    """The `memorised` recipe on a mixture-of-experts model (a 2-layer Mixtral, 4 experts, 2 per
    token): the subject of the methods that need experts."""
    import obliviate as ob
    from obliviate.models import TinyModelConfig

    root = tmp_path_factory.mktemp("memorised_moe")
    ob.generate(root / "bench", seed=1, entities=20)
    ob.finetune(ob.FinetuneConfig(benchmark=str(root / "bench"),
                                  tiny=TinyModelConfig(layers=2, hidden=64, intermediate=128, experts=4),
                                  epochs=100, optim=ob.FinetuneOptim(lr=3e-3, batch_size=32)),
                root / "target", progress=False)
    return root


# Files whose module fixtures train a model, started first: with a file to each worker at a
# time, one of them started last would leave the other worker idle at the end of the run.
LONGEST_FIRST = ("test_target.py", "test_classifiers.py", "test_quick.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order
