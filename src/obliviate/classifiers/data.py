"""Classifier data: the arrays a classifier benchmark holds, and the readers for users' files.

A classifier benchmark is a folder:

    classifier.json    kind (image | text), class names, where it came from, counts
    train.npz          x, y, users, ids   (the model's training data; forget sets are drawn here)
    test.npz           x, y, users, ids   (never trained on: test accuracy, MIA non-members)
    DATASHEET.md       what it is, for a reader

Images are float32 [n, channels, height, width] in [0, 1]; texts are unicode arrays. Every
array is stored without pickle (unicode dtype), so loading a benchmark runs no code.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.files import parse_json, read_json, read_text, write_json_sorted
from ..errors import ObliviateError
from ..io import atomic_dir, check_output
from .family import MANIFEST, is_classifier_benchmark

SCHEMA = "obliviate.classifier-benchmark/1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MAX_PIXELS = 512 * 512  # the models here are small; larger images are a resize the user should choose
# what a damaged .npz raises on open or on reading an array
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


@dataclass
class ClassData:
    """One split of a classifier benchmark (all arrays share their first dimension n)."""

    kind: str  # image | text
    x: np.ndarray  # image: float32 [n, c, h, w] in [0, 1]; text: str [n]
    y: np.ndarray  # int64 [n], indices into the benchmark's classes
    users: np.ndarray  # str [n], '' where no user is known
    ids: np.ndarray  # str [n], unique sample names (what a forget list names)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> ClassData:
        return ClassData(self.kind, self.x[idx], self.y[idx], self.users[idx], self.ids[idx])


@dataclass
class Benchmark:
    root: Path
    kind: str
    classes: list[str]
    train: ClassData
    test: ClassData
    meta: dict[str, Any]


def _checked(kind: str, x: np.ndarray, y: np.ndarray, users: np.ndarray, ids: np.ndarray,
             n_classes: int, where: str) -> ClassData:
    n = len(y)
    if n == 0:
        raise ObliviateError(f"{where}: no samples")
    for name, arr in (("x", x), ("users", users), ("ids", ids)):
        if len(arr) != n:
            raise ObliviateError(f"{where}: '{name}' has {len(arr)} rows but 'y' has {n}")
    if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= n_classes:
        raise ObliviateError(f"{where}: labels must be integers in [0, {n_classes - 1}]")
    if kind == "image":
        if x.ndim != 4 or not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ObliviateError(f"{where}: images must be finite, shaped [n, c, h, w], in [0, 1]")
    if len(set(ids.tolist())) != n:
        raise ObliviateError(f"{where}: sample ids are not unique")
    return ClassData(kind, x, y.astype(np.int64), users.astype(str), ids.astype(str))


def as_images(x: np.ndarray, where: str) -> np.ndarray:
    """[n, h, w], [n, h, w, c] or [n, c, h, w] arrays (uint8 0..255 or floats in [0, 1]) as
    float32 [n, c, h, w] in [0, 1]."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.dtype.kind != "f":
        raise ObliviateError(f"{where}: images must be uint8 (0..255) or floats in [0, 1], "
                             f"got {x.dtype}")
    x = x.astype(np.float32)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4:
        raise ObliviateError(f"{where}: images must be [n, h, w], [n, h, w, c] or [n, c, h, w], "
                             f"got shape {list(x.shape)}")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ObliviateError(f"{where}: float images must be finite and in [0, 1]")
    return np.ascontiguousarray(x)


def read_arrays(path: str | Path) -> tuple[ClassData, list[str]]:
    """An .npz of x (images), y (labels) and optionally users, ids and classes; no pickle."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ObliviateError(f"{path}: not an .npz file (numpy.savez writes one)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except _NPZ_ERRORS as exc:
        raise ObliviateError(f"{path}: not a readable .npz without pickled objects ({exc})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise ObliviateError(f"{path}: missing array(s) {', '.join(missing)} (need x and y)")
    y = arrays["y"]
    if y.ndim != 1 or y.dtype.kind not in "iu" or not len(y) or y.min() < 0:
        raise ObliviateError(f"{path}: 'y' must be a non-empty 1-d array of integer labels >= 0")
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else \
        [str(c) for c in range(int(y.max()) + 1)]
    n = len(y)
    users = arrays.get("users", np.full(n, "", dtype=str))
    ids = arrays.get("ids", np.array([f"{path.stem}-{i}" for i in range(n)]))
    data = _checked("image", as_images(arrays["x"], str(path)), y, users, ids, len(classes), str(path))
    return data, classes


def read_image_folder(root: str | Path) -> tuple[ClassData, list[str]]:
    """`root/<class>/<image>` files; an optional `root/users.csv` (columns path,user, path
    relative to root) names each image's user. All images must share one size."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ObliviateError(f"{root}: needs two or more class folders ({root}/<class>/<image>.png)")
    xs, ys, ids = [], [], []
    for label, cls in enumerate(classes):
        files = [f for f in sorted((root / cls).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise ObliviateError(f"{root / cls}: no images ({', '.join(IMAGE_SUFFIXES)})")
        for f in files:
            xs.append(_read_image(f, xs[0].shape[:2] if xs else None))
            ys.append(label)
            ids.append(f"{cls}/{f.name}")
    users = _users_csv(root, ids)
    x = as_images(np.stack(xs), str(root))
    data = _checked("image", x, np.array(ys), np.array([users.get(i, "") for i in ids]), np.array(ids),
                    len(classes), str(root))
    return data, classes


def _read_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 [h, w, 3]; its size is checked before its pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ObliviateError(f"{path}: {w}x{h} pixels; resize images to at most {MAX_PIXELS} pixels")
            if size is not None and (h, w) != size:
                raise ObliviateError(f"{path}: {w}x{h} but earlier images are {size[1]}x{size[0]}; "
                                     "resize them to one size")
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as exc:
        raise ObliviateError(f"{path}: not a readable image ({exc})") from None


def _users_csv(root: Path, ids: list[str]) -> dict[str, str]:
    """path -> user from `root/users.csv`; every row must name an image and a user, once."""
    path = root / "users.csv"
    if not path.is_file():
        return {}
    rows = list(csv.reader(read_text(path).splitlines()))
    if not rows or [c.strip() for c in rows[0][:2]] != ["path", "user"]:
        raise ObliviateError(f"{path}: the first line must be the header path,user")
    known, out = set(ids), {}
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ObliviateError(f"{path}:{n}: expected two non-empty fields path,user")
        image, user = row[0].strip(), row[1].strip()
        if image not in known:
            raise ObliviateError(f"{path}:{n}: no image {image!r} (paths are <class>/<file> under {root})")
        if image in out:
            raise ObliviateError(f"{path}:{n}: {image!r} is listed twice")
        out[image] = user
    unlisted = [i for i in ids if i not in out]
    if unlisted:  # an image without its user would survive a request naming that user
        raise ObliviateError(f"{path}: no row for {unlisted[0]!r} ({len(unlisted)} images unlisted); give "
                             "every image a user (a placeholder such as 'unknown' is fine)")
    return out


def read_text_jsonl(path: str | Path, classes: list[str] | None = None) -> tuple[ClassData, list[str]]:
    """JSONL lines {"text": ..., "label": ..., "user": optional, "id": optional}. A label is a
    class name: a string, or an integer read as its decimal text; the test file's labels must
    be classes of the training file (`classes`)."""
    path = Path(path)
    rows, lines = [], []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        r = parse_json(line, f"{path}:{n}")
        label = r.get("label") if isinstance(r, dict) else None
        if not isinstance(r, dict) or not isinstance(r.get("text"), str) or isinstance(label, bool) \
                or not isinstance(label, str | int):
            raise ObliviateError(f"{path}:{n}: each line needs \"text\" (a string) and \"label\" (a string or an integer)")
        for key in ("user", "id"):
            if key in r and (not isinstance(r[key], str) or not r[key].strip()):
                raise ObliviateError(f"{path}:{n}: \"{key}\" must be a non-empty string when given")
        rows.append(r)
        lines.append(n)
    if not rows:
        raise ObliviateError(f"{path}: no samples")
    kinds = {type(r["label"]) for r in rows}
    if len(kinds) > 1:
        n = next(n for r, n in zip(rows, lines, strict=True) if type(r["label"]) is not type(rows[0]["label"]))
        raise ObliviateError(f"{path}:{n}: labels mix strings and integers; write every label one way")
    names = classes or sorted({str(r["label"]) for r in rows})
    index = {c: i for i, c in enumerate(names)}
    bad = next((n for r, n in zip(rows, lines, strict=True) if str(r["label"]) not in index), None)
    if bad is not None:
        raise ObliviateError(f"{path}:{bad}: its label is not a class of the training file")
    y = np.array([index[str(r["label"])] for r in rows])
    data = _checked("text", np.array([r["text"] for r in rows]), y,
                    np.array([r.get("user", "") for r in rows]),
                    np.array([r.get("id", f"{path.stem}-{n}") for r, n in zip(rows, lines, strict=True)]),
                    len(names), str(path))
    return data, names


def read_source(path: str | Path, classes: list[str] | None = None) -> tuple[ClassData, list[str]]:
    """A user's data: an image folder, an .npz of arrays or a JSONL of labelled texts."""
    path = Path(path)
    if not path.exists():
        raise ObliviateError(f"data not found: {path}")
    if path.is_dir():
        return read_image_folder(path)
    if path.suffix == ".npz":
        return read_arrays(path)
    if path.suffix in (".jsonl", ".json"):
        return read_text_jsonl(path, classes)
    raise ObliviateError(f"{path}: give an image folder (<class>/<image>), an .npz (x, y) or a "
                         "JSONL of {\"text\", \"label\"}")


def split_test(data: ClassData, fraction: float, seed: int) -> tuple[ClassData, ClassData]:
    """A seeded stratified split: `fraction` of each class goes to the test side."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(data), dtype=bool)
    for c in np.unique(data.y):
        idx = np.flatnonzero(data.y == c)
        rng.shuffle(idx)
        # every class keeps a training sample: a class with one sample has none on the test side
        test[idx[:min(len(idx) - 1, max(1, round(fraction * len(idx))))]] = True
    return data.take(np.flatnonzero(~test)), data.take(np.flatnonzero(test))


def _every_class_trained(train: ClassData, classes: list[str], where: str) -> None:
    empty = [c for i, c in enumerate(classes) if not (train.y == i).any()]
    if empty:
        raise ObliviateError(f"{where}: class {empty[0]!r} has no training samples")


def write_benchmark(out: str | Path, train: ClassData, test: ClassData, classes: list[str],
                    meta: dict[str, Any], datasheet: str, inputs: dict[str, Any] | None = None) -> Path:
    """Write a benchmark folder atomically (refusing an output that holds an input)."""
    check_output(out, inputs or {}, kind="dir")
    if train.kind != test.kind:
        raise ObliviateError("train and test data must be of one kind (images or texts)")
    if train.kind == "image" and train.x.shape[1:] != test.x.shape[1:]:
        raise ObliviateError(f"train images are {list(train.x.shape[1:])} but test images "
                             f"{list(test.x.shape[1:])}; give both one size")
    if len(classes) < 2:
        raise ObliviateError(f"the data has {len(classes)} class; a classifier needs two or more")
    _every_class_trained(train, classes, "the training data")
    clash = set(train.ids.tolist()) & set(test.ids.tolist())
    if clash:
        raise ObliviateError(f"sample ids in both train and test data, e.g. {sorted(clash)[0]!r}")
    manifest = {"schema": SCHEMA, "family": "classifier", "kind": train.kind, "classes": classes,
                "counts": {"train": len(train), "test": len(test),
                           "users": len(set(train.users.tolist()) - {""})}, **meta}
    with atomic_dir(out) as tmp:
        for name, d in (("train", train), ("test", test)):
            np.savez(tmp / f"{name}.npz", x=d.x, y=d.y, users=d.users, ids=d.ids)
        write_json_sorted(tmp / MANIFEST, manifest)
        (tmp / "DATASHEET.md").write_text(datasheet, encoding="utf-8")
    return Path(out)


def load_benchmark(root: str | Path) -> Benchmark:
    root = Path(root)
    if not is_classifier_benchmark(root):
        raise ObliviateError(f"{root}: not a classifier benchmark (no {MANIFEST}); make one with "
                             "obliviate generate --family classifier or obliviate benchmark classifier")
    meta = read_json(root / MANIFEST)
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise ObliviateError(f"{root / MANIFEST}: not a classifier benchmark manifest ({SCHEMA})")
    classes, kind = meta.get("classes"), meta.get("kind")
    if not isinstance(classes, list) or len(classes) < 2 or kind not in ("image", "text"):
        raise ObliviateError(f"{root / MANIFEST}: needs 'kind' (image|text) and two or more 'classes'")
    splits = {}
    for name in ("train", "test"):
        path = root / f"{name}.npz"
        try:
            with np.load(path, allow_pickle=False) as f:
                a = {k: f[k] for k in ("x", "y", "users", "ids")}
        except _NPZ_ERRORS as exc:
            raise ObliviateError(f"{path}: unreadable benchmark split ({exc})") from None
        splits[name] = _checked(kind, a["x"], a["y"], a["users"], a["ids"], len(classes), str(path))
    _every_class_trained(splits["train"], classes, str(root / "train.npz"))
    return Benchmark(root, kind, [str(c) for c in classes], splits["train"], splits["test"], meta)
