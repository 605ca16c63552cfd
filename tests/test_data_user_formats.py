"""A user's own data: CIFAR folders (python format), image folder trees, CSV files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import mixupe.data as D
from mixupe.errors import ConfigError, CorruptDataError, DataUnavailableError


def write_cifar(root, num_classes: int, n_train: int = 20, n_test: int = 8):
    rng = np.random.default_rng(0)
    if num_classes == 10:
        folder = root / "cifar-10-batches-py"
        files = {f"data_batch_{i}": n_train for i in range(1, 6)} | {"test_batch": n_test}
        key = b"labels"
    else:
        folder = root / "cifar-100-python"
        files = {"train": n_train, "test": n_test}
        key = b"fine_labels"
    folder.mkdir()
    written = {}
    for name, n in files.items():
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = (np.arange(n) % num_classes).tolist()
        with (folder / name).open("wb") as handle:
            pickle.dump({b"data": data, key: labels}, handle)
        written[name] = (data, labels)
    return folder, written


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_folder_loads_with_official_test(tmp_path, num_classes):
    _, written = write_cifar(tmp_path, num_classes, n_train=200 if num_classes == 100 else 20)
    ds = D.load(f"cifar{num_classes}", root=tmp_path, val_fraction=0.2)
    test_name = "test_batch" if num_classes == 10 else "test"
    data, labels = written[test_name]
    assert ds.num_classes == num_classes and ds.input_shape == (3, 32, 32)
    assert np.array_equal(ds.test.y.numpy(), labels)
    # Undo the per-channel standardisation by hand: values are pixels / 255 in CHW order.
    train_parts = [v for k, v in written.items() if k != test_name]
    train = np.concatenate([d for d, _ in train_parts]).reshape(-1, 3, 32, 32) / 255.0
    rows = ds.info["indices"]["train"]
    mean = train[rows].mean(axis=(0, 2, 3), keepdims=True)
    std = train[rows].std(axis=(0, 2, 3), keepdims=True)
    expected = (data.reshape(-1, 3, 32, 32) / 255.0 - mean) / std
    assert np.allclose(ds.test.x.numpy(), expected, atol=1e-4)


def test_cifar_corrupt_or_missing(tmp_path):
    folder, _ = write_cifar(tmp_path, 10)
    (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CorruptDataError, match=r"data_batch_3.*cifar-10-python.tar.gz"):
        D.load("cifar10", root=tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataUnavailableError, match=r"\['data_batch_3'\] not found.*extract it"):
        D.load("cifar10", root=folder)


def test_image_folder_tree(tmp_path):
    image_mod = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    pixels = {}
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, size=(5, 7), dtype=np.uint8)
                image_mod.fromarray(arr, mode="L").save(tmp_path / split / cls / f"{i}.png")
                pixels[(split, cls, i)] = arr
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    ds = D.load("image-folder", root=tmp_path, mode="L", val_fraction=0.25)
    assert ds.info["classes"] == ["cat", "dog"] and ds.num_classes == 2
    assert ds.input_shape == (1, 5, 7) and len(ds.test) == 4
    assert len(ds.train) + len(ds.val) == 12
    train = np.stack([pixels[("train", c, i)] for c in ("cat", "dog") for i in range(6)]) / 255.0
    rows = ds.info["indices"]["train"]
    mean, std = train[rows].mean(), train[rows].std()
    expected = np.stack([pixels[("test", c, i)] for c in ("cat", "dog") for i in range(2)])
    assert np.allclose(ds.test.x[:, 0].numpy(), (expected / 255.0 - mean) / std, atol=1e-5)
    assert ds.test.y.tolist() == [0, 0, 1, 1]
    rgb = D.load("image-folder", root=tmp_path / "train", size=(4, 4))
    assert rgb.input_shape == (3, 4, 4)


def test_image_folder_errors(tmp_path):
    image_mod = pytest.importorskip("PIL.Image")
    with pytest.raises(ConfigError, match=r"image-folder needs root="):
        D.load("image-folder")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    image_mod.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a" / "0.png")
    image_mod.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "b" / "0.png")
    with pytest.raises(ConfigError, match=r"has shape .* pass size=\(H, W\)"):
        D.load("image-folder", root=tmp_path, mode="L")
    (tmp_path / "b" / "0.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(CorruptDataError, match=r"cannot decode image .*0.png"):
        D.load("image-folder", root=tmp_path, mode="L")
    with pytest.raises(ConfigError, match=r"mode='CMYK' is not supported"):
        D.load("image-folder", root=tmp_path, mode="CMYK")


def test_csv_file(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    labels = ["yes" if v > 0 else "no" for v in x[:, 0]]
    lines = ["a,kind,b,c"] + [
        f"{r[0]},{lab},{r[1]},{r[2]}" for r, lab in zip(x, labels, strict=True)
    ]
    path = tmp_path / "table.csv"
    path.write_text("\n".join(lines) + "\n")
    ds = D.load("csv", root=path, label="kind")
    assert ds.num_classes == 2 and ds.input_shape == (3,) and ds.domain == "tabular"
    assert ds.info["classes"] == ["no", "yes"] and ds.info["feature_names"] == ["a", "b", "c"]
    idx = ds.info["indices"]
    mean, std = x[idx["train"]].mean(0), x[idx["train"]].std(0)
    assert np.allclose(ds.test.x.numpy(), (x[idx["test"]] - mean) / std, atol=1e-5)
    assert ds.test.y.tolist() == [int(labels[i] == "yes") for i in idx["test"]]


def test_csv_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,y\n1,0\n2,1\n")
    with pytest.raises(ConfigError, match=r"label='z' is not a column.*\['a', 'y'\]"):
        D.load("csv", root=path, label="z")
    with pytest.raises(ConfigError, match=r"csv needs root= the CSV file and label="):
        D.load("csv", root=path)
    path.write_text("a,y\n1,0\nred,1\n3,0\n")
    with pytest.raises(ConfigError, match=r"line 3, column 'a' holds 'red', not a number"):
        D.load("csv", root=path, label="y")
    path.write_text("a,y\n1,0\n2\n")
    with pytest.raises(CorruptDataError, match=r"line 3 has 1 fields, the header has 2"):
        D.load("csv", root=path, label="y")
    with pytest.raises(DataUnavailableError, match=r"not found; check root="):
        D.load("csv", root=tmp_path / "missing.csv", label="y")


def test_one_class_image_folder_is_refused_at_load_time(tmp_path):
    image_mod = pytest.importorskip("PIL.Image")
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()  # a class folder without images does not count
    for k in range(4):
        image_mod.fromarray(np.full((4, 4), k, np.uint8)).save(tmp_path / "cat" / f"{k}.png")
    with pytest.raises(ConfigError, match=r"single class \['cat'\].*root/<class>/<image>"):
        D.load("image-folder", root=tmp_path, mode="L")
    # The same tree under train/ is refused the same way.
    (tmp_path / "train").mkdir()
    (tmp_path / "cat").rename(tmp_path / "train" / "cat")
    with pytest.raises(ConfigError, match=r"single class \['cat'\]"):
        D.load("image-folder", root=tmp_path, mode="L")
