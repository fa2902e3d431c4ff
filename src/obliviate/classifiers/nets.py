"""Tiny classifiers that train on two CPU cores in about a minute, and their folders.

`resnet8` (images): a stem convolution, three residual stages of one basic block each (16, 32
and 64 channels) and a linear head: 8 weight layers, He et al. 2016's ResNet at its smallest.
GroupNorm instead of BatchNorm: no running statistics, so a model's output depends on its
weights only (unlearning updates and audits cannot leave stale batch statistics behind).
`bag` (texts): the mean of word embeddings, one hidden layer, a linear head.

Both expose `features(x)` (the penultimate representation, what LAF reshapes and the linear
probe audit reads) and `head`. A model folder holds `model.safetensors` and `obliviate.json`
(family "classifier", the architecture, classes, vocabulary and the run's provenance).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..data.files import read_json, write_json_sorted
from ..errors import ObliviateError
from ..io import atomic_dir, check_output
from .family import PROVENANCE, WEIGHTS, is_classifier_model

_WORD = re.compile(r"[\w']+")
MAX_WORDS = 64


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(4, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(4, cout)
        self.skip = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(4, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(h)) + self.skip(x))


class ResNet8(nn.Module):
    def __init__(self, channels: int, classes: int, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.GroupNorm(4, width), nn.ReLU())
        self.stages = nn.Sequential(_Block(width, width, 1), _Block(width, 2 * width, 2),
                                    _Block(2 * width, 4 * width, 2))
        self.head = nn.Linear(4 * width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, c, h, w] -> [batch, 4 * width]"""
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BagClassifier(nn.Module):
    def __init__(self, vocab: int, classes: int, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width, padding_idx=0)
        self.hidden = nn.Linear(width, width)
        self.head = nn.Linear(width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, words] word ids (0 = padding) -> [batch, width]"""
        keep = (x != 0).unsqueeze(-1).float()
        mean = (self.embed(x) * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return torch.relu(self.hidden(mean))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_vocab(texts: np.ndarray, size: int = 4000) -> list[str]:
    """The training texts' most frequent lower-cased words; id 0 is padding, 1 unknown."""
    counts: dict[str, int] = {}
    for t in texts.tolist():
        for w in _WORD.findall(t.lower()):
            counts[w] = counts.get(w, 0) + 1
    ranked = sorted(counts, key=lambda w: (-counts[w], w))[:size - 2]
    return ["<pad>", "<unk>", *ranked]


def restrict_vocab(model: nn.Module, spec: dict[str, Any], kept_texts: np.ndarray) -> dict[str, Any]:
    """Cut a text model's vocabulary to the words of the data it keeps: a word seen only in
    forgotten samples (a name, an e-mail address) would otherwise stay in the saved word list
    and its embedding row. Returns the new spec; image models are left as they are."""
    if spec["arch"] != "bag":
        return spec
    kept = {w for t in kept_texts.tolist() for w in _WORD.findall(t.lower())}
    rows = [i for i, w in enumerate(spec["vocab"]) if i < 2 or w in kept]  # padding and unknown stay
    old = model.embed
    model.embed = nn.Embedding(len(rows), old.embedding_dim, padding_idx=0)
    with torch.no_grad():
        model.embed.weight.copy_(old.weight[torch.tensor(rows)])
    return {**spec, "vocab": [spec["vocab"][i] for i in rows]}


def inputs(spec: dict[str, Any], x: np.ndarray) -> torch.Tensor:
    """A data split's x as the model's input tensor (images as they are, texts as word ids)."""
    if spec["arch"] == "resnet8":
        shape = tuple(spec["input_shape"])
        if tuple(x.shape[1:]) != shape:
            raise ObliviateError(f"images are {list(x.shape[1:])} but the model reads {list(shape)}")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    index = {w: i for i, w in enumerate(spec["vocab"])}
    ids = np.zeros((len(x), MAX_WORDS), dtype=np.int64)
    for row, text in enumerate(x.tolist()):
        words = [index.get(w, 1) for w in _WORD.findall(text.lower())][:MAX_WORDS]
        ids[row, :len(words)] = words
    return torch.from_numpy(ids)


def spec_for(kind: str, classes: list[str], train_x: np.ndarray) -> dict[str, Any]:
    """The architecture a benchmark's data calls for."""
    if kind == "image":
        return {"arch": "resnet8", "input_shape": list(train_x.shape[1:]), "classes": classes, "width": 16}
    return {"arch": "bag", "vocab": build_vocab(train_x), "classes": classes, "width": 64}


def check_spec(spec: Any, where: str) -> None:
    """A model folder's architecture spec, checked before anything is built from it."""
    needs = {"resnet8": ("input_shape", "classes", "width"), "bag": ("vocab", "classes", "width")}
    arch = spec.get("arch") if isinstance(spec, dict) else None
    if arch not in needs:
        raise ObliviateError(f"{where}: unknown classifier architecture {arch!r} ({', '.join(needs)})")
    missing = [k for k in needs[arch] if k not in spec]
    if missing:
        raise ObliviateError(f"{where}: the {arch} spec has no '{missing[0]}'")
    width, classes = spec["width"], spec["classes"]
    if not isinstance(width, int) or width < 4 or width % 4 or not isinstance(classes, list) or len(classes) < 2:
        raise ObliviateError(f"{where}: 'width' must be a positive multiple of 4 and 'classes' two or more names")
    if arch == "resnet8" and not (isinstance(spec["input_shape"], list) and len(spec["input_shape"]) == 3
                                  and all(isinstance(d, int) and d > 0 for d in spec["input_shape"])):
        raise ObliviateError(f"{where}: 'input_shape' must be [channels, height, width]")
    if arch == "bag" and not (isinstance(spec["vocab"], list) and len(spec["vocab"]) >= 2):
        raise ObliviateError(f"{where}: 'vocab' must be a list of words")


def build(spec: dict[str, Any], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if spec["arch"] == "resnet8":
        return ResNet8(spec["input_shape"][0], len(spec["classes"]), spec["width"])
    if spec["arch"] == "bag":
        return BagClassifier(len(spec["vocab"]), len(spec["classes"]), spec["width"])
    raise ObliviateError(f"unknown classifier architecture {spec['arch']!r}")


def save(model: nn.Module, spec: dict[str, Any], out: str | Path, provenance: dict[str, Any],
         inputs_: dict[str, Any] | None = None) -> Path:
    """The weights (safetensors) and the spec with provenance, into a new folder, atomically."""
    check_output(out, inputs_ or {}, kind="dir")
    bad = [n for n, p in model.state_dict().items() if not torch.isfinite(p).all()]
    if bad:
        raise ObliviateError(f"the model has non-finite weights ({bad[0]}): the run failed; "
                             "lower optim.lr")
    with atomic_dir(out) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS))
        write_json_sorted(tmp / PROVENANCE, {"family": "classifier", "spec": spec, **provenance})
    return Path(out)


def provenance(path: str | Path) -> dict[str, Any]:
    """A classifier folder's spec and provenance without loading its weights."""
    if not is_classifier_model(path):
        raise ObliviateError(f"{path}: not a classifier model folder ({WEIGHTS} and {PROVENANCE} "
                             "with family 'classifier')")
    return read_json(Path(path) / PROVENANCE)


def load(path: str | Path) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(model, spec, provenance) of a classifier folder."""
    path = Path(path)
    if not is_classifier_model(path):
        raise ObliviateError(f"{path}: not a classifier model folder ({WEIGHTS} and {PROVENANCE} "
                             "with family 'classifier'); train one with obliviate finetune")
    doc = read_json(path / PROVENANCE)
    spec = doc.get("spec")
    check_spec(spec, str(path / PROVENANCE))
    model = build(spec)
    try:
        model.load_state_dict(load_file(str(path / WEIGHTS)))
    except (RuntimeError, OSError, SafetensorError) as exc:
        raise ObliviateError(f"{path / WEIGHTS}: weights do not fit the architecture "
                             f"({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, spec, doc
