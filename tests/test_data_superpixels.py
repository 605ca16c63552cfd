"""Superpixel graphs against a plain pixel loop, and the cache: reused, rebuilt when stale."""

from __future__ import annotations

import json
import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import mixupe.data as D
from mixupe.data import superpixels as SP
from mixupe.errors import ConfigError

pytestmark = pytest.mark.needs("skimage")
# Building from the installed Fashion-MNIST files and loading the graphs (PyG Data objects).
real_data = pytest.mark.needs("fashion-mnist", "torch_geometric")

LIMIT = 12


def test_node_features_and_edges_match_a_pixel_loop():
    rng = np.random.default_rng(0)
    image = rng.random((28, 28))
    x, edges = SP.image_to_superpixels(image, n_segments=30, compactness=0.25)
    from skimage.segmentation import slic

    seg = slic(image, n_segments=30, compactness=0.25, channel_axis=None, start_label=0)
    labels = sorted(set(seg.ravel().tolist()))
    assert x.shape == (len(labels), 3)
    expected_edges = set()
    for k, label in enumerate(labels):
        pixels = [(r, c) for r in range(28) for c in range(28) if seg[r, c] == label]
        assert x[k, 0] == pytest.approx(np.mean([image[r, c] for r, c in pixels]), abs=1e-6)
        assert x[k, 1] == pytest.approx(np.mean([r for r, _ in pixels]) / 28, abs=1e-6)
        assert x[k, 2] == pytest.approx(np.mean([c for _, c in pixels]) / 28, abs=1e-6)
    for r in range(28):
        for c in range(28):
            for dr, dc in ((0, 1), (1, 0)):
                if r + dr < 28 and c + dc < 28 and seg[r, c] != seg[r + dr, c + dc]:
                    a, b = labels.index(seg[r, c]), labels.index(seg[r + dr, c + dc])
                    expected_edges |= {(a, b), (b, a)}
    assert set(map(tuple, edges.T.tolist())) == expected_edges
    assert edges.shape[1] == len(expected_edges)  # no duplicates


@real_data
def test_cache_is_built_once_then_reused(tmp_path, monkeypatch):
    first = D.load("fashion-mnist-superpixels", limit=LIMIT, cache_dir=tmp_path)
    assert len(first.train) + len(first.val) == LIMIT and len(first.test) == LIMIT
    assert len(list(tmp_path.glob("*.npz"))) == 1 and len(list(tmp_path.glob("*.json"))) == 1

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the valid cache was rebuilt")

    monkeypatch.setattr(SP, "build_superpixel_arrays", no_rebuild)
    again = D.load("fashion-mnist-superpixels", limit=LIMIT, cache_dir=tmp_path)
    for a, b in zip(first.test.graphs, again.test.graphs, strict=True):
        assert np.array_equal(a.x.numpy(), b.x.numpy())
        assert np.array_equal(a.edge_index.numpy(), b.edge_index.numpy())


def count_builds(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = SP.build_superpixel_arrays

    def counting(images, **kwargs):
        calls.append(len(images))
        return real(images, **kwargs)

    monkeypatch.setattr(SP, "build_superpixel_arrays", counting)
    return calls


@real_data
@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "drop_manifest", "edit_manifest"])
def test_damaged_cache_is_rebuilt_not_used(tmp_path, monkeypatch, caplog, damage):
    path = D.prepare("fashion-mnist-superpixels", limit=LIMIT, cache_dir=tmp_path)
    good = path.read_bytes()
    manifest = path.with_suffix(".json")
    if damage == "truncate":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "flip_byte":
        data = bytearray(good)
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "drop_manifest":
        manifest.unlink()
    else:
        content = json.loads(manifest.read_text())
        content["params"]["n_segments"] = 5
        manifest.write_text(json.dumps(content))
    calls = count_builds(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="mixupe.data.superpixels"):
        ds = D.load("fashion-mnist-superpixels", limit=LIMIT, cache_dir=tmp_path)
    assert calls == [LIMIT, LIMIT]  # train and test rebuilt
    assert "rebuilding" in caplog.text
    assert path.read_bytes() == good  # the rebuilt cache equals the original build
    assert len(ds.test) == LIMIT


@real_data
def test_other_parameters_use_another_cache(tmp_path, monkeypatch):
    a = D.prepare("fashion-mnist-superpixels", limit=LIMIT, cache_dir=tmp_path)
    calls = count_builds(monkeypatch)
    b = D.prepare("fashion-mnist-superpixels", limit=LIMIT, cache_dir=tmp_path, n_segments=40)
    assert a != b and calls == [LIMIT, LIMIT]
    small = D.load("fashion-mnist-superpixels", limit=LIMIT, cache_dir=tmp_path, n_segments=40)
    big = D.load("fashion-mnist-superpixels", limit=LIMIT, cache_dir=tmp_path)
    assert np.mean([g.num_nodes for g in small.test.graphs]) < np.mean(
        [g.num_nodes for g in big.test.graphs]
    )


@real_data
def test_env_variable_sets_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXUPE_CACHE", str(tmp_path / "env-cache"))
    path = D.prepare("fashion-mnist-superpixels", limit=3)
    assert path.parent == tmp_path / "env-cache"


@real_data
def test_bad_options_raise(tmp_path):
    with pytest.raises(ConfigError, match=r"limit=0 must be None \(all images\) or a positive"):
        D.load("fashion-mnist-superpixels", limit=0, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"n_segments=1 must be an integer >= 2"):
        D.prepare("fashion-mnist-superpixels", n_segments=1, cache_dir=tmp_path)
    assert D.prepare("digits") is None


def write_fake_fashion_mnist(folder: Path, seed: int, n: int = 6) -> None:
    """Four uncompressed IDX files of ``n`` random 28x28 images; same sizes for every seed."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split in ("train", "t10k"):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        header = struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28)
        (folder / f"{split}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        header = struct.pack(">BBBBI", 0, 0, 8, 1, n)
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())


def test_cache_is_keyed_on_the_source_content_not_its_size(tmp_path, monkeypatch):
    source, cache = tmp_path / "source", tmp_path / "cache"
    write_fake_fashion_mnist(source, seed=0)
    first = D.prepare("fashion-mnist-superpixels", root=source, cache_dir=cache)
    sizes = sorted(p.stat().st_size for p in source.iterdir())
    write_fake_fashion_mnist(source, seed=1)  # other pixels, the same file sizes
    assert sorted(p.stat().st_size for p in source.iterdir()) == sizes
    calls = count_builds(monkeypatch)
    second = D.prepare("fashion-mnist-superpixels", root=source, cache_dir=cache)
    assert second != first and calls == [6, 6]
    # The new cache holds the graphs of the new pixels, built here image by image.
    images = SP.read_idx(source / "train-images-idx3-ubyte").astype(np.float32) / 255.0
    with np.load(second) as archive:
        expected = SP.build_superpixel_arrays(images, n_segments=75, compactness=0.25)
        assert np.array_equal(archive["train_x"], expected["x"])
        assert np.array_equal(archive["train_edge_index"], expected["edge_index"])
    # A copy of the same files elsewhere reuses the cache.
    shutil.copytree(source, tmp_path / "copy")
    calls.clear()
    third = D.prepare("fashion-mnist-superpixels", root=tmp_path / "copy", cache_dir=cache)
    assert third == second and calls == []


@pytest.mark.needs("torch_geometric")
def test_cli_prepare_builds_the_cache_once_where_cache_dir_says(tmp_path, monkeypatch, capsys):
    from mixupe.cli import main

    source, cache, default = tmp_path / "source", tmp_path / "cache", tmp_path / "default"
    write_fake_fashion_mnist(source, seed=0)
    monkeypatch.setenv("MIXUPE_CACHE", str(default))
    calls = count_builds(monkeypatch)
    code = main(["data", "prepare", "fashion-mnist-superpixels", "--root", str(source),
                 "--option", f"cache_dir={cache}", "--option", "val_fraction=0.5"])
    out = capsys.readouterr().out
    assert code == 0 and "is ready" in out
    assert calls == [6, 6]  # train and test, once
    assert len(list(cache.glob("*.npz"))) == 1
    assert not default.exists()
