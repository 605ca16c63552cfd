"""TU graph folders: a small TU dataset written by the test, read back graph by graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mixupe.data as D
from mixupe.errors import ConfigError, CorruptDataError, DataUnavailableError

pytest.importorskip("torch_geometric")

# 12 graphs: triangles (class "1") and 3-node paths (class "-1"), alternating; node labels
# 7 or 9, one-hot over 7..9 (TUDataset shifts node labels to start at 0; 8 stays a column).
SHAPES = {"1": [(0, 1), (1, 2), (2, 0)], "-1": [(0, 1), (1, 2)]}


def write_tu(folder, name="TOY", *, node_labels=True, attributes=False, n=12):
    folder.mkdir(parents=True, exist_ok=True)
    edges, indicator, labels, graph_labels, attrs = [], [], [], [], []
    expected = []
    offset = 0
    for g in range(n):
        cls = "1" if g % 2 == 0 else "-1"
        node_label = [7 if (g + k) % 3 else 9 for k in range(3)]
        for a, b in SHAPES[cls]:
            edges += [(offset + a + 1, offset + b + 1), (offset + b + 1, offset + a + 1)]
        indicator += [g + 1] * 3
        labels += node_label
        attrs += [(0.5 * g, -1.0 * k) for k in range(3)]
        graph_labels.append(cls)
        expected.append((cls, SHAPES[cls], node_label, attrs[-3:]))
        offset += 3
    (folder / f"{name}_A.txt").write_text("".join(f"{a}, {b}\n" for a, b in edges))
    (folder / f"{name}_graph_indicator.txt").write_text("".join(f"{i}\n" for i in indicator))
    (folder / f"{name}_graph_labels.txt").write_text("".join(f"{c}\n" for c in graph_labels))
    if node_labels:
        (folder / f"{name}_node_labels.txt").write_text("".join(f"{v}\n" for v in labels))
    if attributes:
        (folder / f"{name}_node_attributes.txt").write_text(
            "".join(f"{a}, {b}\n" for a, b in attrs))
    return expected


def _edge_set(graph):
    return {tuple(sorted(e)) for e in graph.edge_index.t().tolist()}


def _check_graphs(ds, expected, node_columns):
    for split in ("train", "val", "test"):
        for graph, index in zip(getattr(ds, split).graphs, ds.info["indices"][split], strict=True):
            cls, shape, node_label, attrs = expected[index]
            assert int(graph.y) == (1 if cls == "1" else 0)  # "-1" < "1" in numeric order
            assert _edge_set(graph) == {tuple(sorted(e)) for e in shape}
            assert graph.edge_index.shape[1] == 2 * len(shape)  # both directions, no duplicates
            assert torch.equal(graph.x, node_columns(node_label, attrs, shape))


def test_tu_folder_with_node_labels(tmp_path):
    expected = write_tu(tmp_path / "TOY", attributes=True)
    ds = D.load("tu-folder", root=tmp_path, tu_name="TOY", seed=0, val_fraction=0.2,
                test_fraction=0.2)
    assert ds.num_classes == 2 and ds.domain == "graphs" and ds.input_shape == (3,)

    def labels_only(node_label, attrs, shape):
        return torch.eye(3)[[v - 7 for v in node_label]]

    _check_graphs(ds, expected, labels_only)
    idx = ds.info["indices"]
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(12))
    # Stratified: the 6 + 6 graphs keep their balance in every split.
    for split in ("train", "val", "test"):
        y = getattr(ds, split).y
        assert int((y == 0).sum()) == int((y == 1).sum())
    # Attributes first, then the node-label one-hot (TUDataset's column order).
    with_attr = D.load("tu-folder", root=tmp_path / "TOY", use_node_attr=True, seed=0,
                       val_fraction=0.2, test_fraction=0.2)

    def attrs_then_labels(node_label, attrs, shape):
        return torch.cat([torch.tensor(attrs), labels_only(node_label, attrs, shape)], dim=1)

    _check_graphs(with_attr, expected, attrs_then_labels)


def test_tu_folder_without_node_features_gets_degree_one_hot(tmp_path):
    expected = write_tu(tmp_path / "raw-layout" / "TOY" / "raw", node_labels=False)
    ds = D.load("tu-folder", root=tmp_path / "raw-layout", tu_name="TOY", seed=3,
                val_fraction=0.2, test_fraction=0.2)
    assert ds.input_shape == (3,) and ds.info["node_features"] == "one-hot degree 0..2"

    def degrees(node_label, attrs, shape):
        deg = [sum(k in e for e in shape) for k in range(3)]
        return torch.eye(3)[deg]

    _check_graphs(ds, expected, degrees)
    capped = D.load("tu-folder", root=tmp_path / "raw-layout", tu_name="TOY", max_degree=1,
                    val_fraction=0.2, test_fraction=0.2)
    assert capped.input_shape == (2,)
    assert all(bool((g.x.sum(1) == 1).all()) for g in capped.train.graphs)


def test_tu_splits_are_drawn_per_seed(tmp_path):
    write_tu(tmp_path, n=40)
    a = D.load("tu-folder", root=tmp_path, seed=0)
    b = D.load("tu-folder", root=tmp_path, seed=0)
    c = D.load("tu-folder", root=tmp_path, seed=1)
    assert np.array_equal(a.info["indices"]["test"], b.info["indices"]["test"])
    assert not np.array_equal(a.info["indices"]["test"], c.info["indices"]["test"])


def test_tu_graphs_train_a_gin(tmp_path):
    import mixupe
    import mixupe.models

    write_tu(tmp_path)
    ds = D.load("tu-folder", root=tmp_path, val_fraction=0.2, test_fraction=0.2)
    model = mixupe.models.build("gin", input_shape=ds.input_shape, num_classes=ds.num_classes,
                                hidden=8, num_layers=2)
    x, y = next(D.batches(ds.train, batch_size=8, shuffle=False))
    out = mixupe.ManifoldMixup(alpha=1.0, layers=["pool"], num_classes=2, seed=0)(model, x, y)
    out.loss.backward()
    assert out.logits.shape == (len(y), 2)


def test_tu_errors_name_the_expected_files(tmp_path):
    with pytest.raises(ConfigError, match=r"tu-folder needs root="):
        D.load("tu-folder")
    with pytest.raises(DataUnavailableError, match=r"does not exist.*NAME_A.txt, "
                       r"NAME_graph_indicator.txt, NAME_graph_labels.txt"):
        D.load("tu-folder", root=tmp_path / "nowhere")
    with pytest.raises(DataUnavailableError, match=r"no TU dataset.*NAME_graph_labels.txt"):
        D.load("tu-folder", root=tmp_path)
    with pytest.raises(DataUnavailableError, match=r"'MUTAG' not found: expected MUTAG_A.txt"):
        D.load("tu-folder", root=tmp_path, tu_name="MUTAG")
    write_tu(tmp_path / "two", name="ONE")
    write_tu(tmp_path / "two", name="TWO")
    with pytest.raises(ConfigError, match=r"several TU datasets \['ONE', 'TWO'\]: pass tu_name="):
        D.load("tu-folder", root=tmp_path / "two")
    (tmp_path / "two" / "TWO_graph_labels.txt").unlink()
    with pytest.raises(DataUnavailableError, match=r"lacks \['TWO_graph_labels.txt'\]"):
        D.load("tu-folder", root=tmp_path / "two", tu_name="TWO")
    (tmp_path / "two" / "ONE_graph_labels.txt").write_text("1\n-1\n")
    with pytest.raises(CorruptDataError, match=r"2 labels but.*names 12 graphs"):
        D.load("tu-folder", root=tmp_path / "two", tu_name="ONE")
    with pytest.raises(ConfigError, match=r"max_degree=0 must be a positive integer"):
        D.load("tu-folder", root=tmp_path / "two", tu_name="ONE", max_degree=0)


def _drop_last_line(path):
    lines = path.read_text().splitlines()
    path.write_text("".join(f"{line}\n" for line in lines[:-1]))


def test_tu_node_labels_one_line_short_names_the_file(tmp_path, capsys):
    # Issue 23.6: used to surface torch_geometric's "start + length exceeds dimension size".
    from mixupe.cli import main

    write_tu(tmp_path)
    _drop_last_line(tmp_path / "TOY_node_labels.txt")
    with pytest.raises(CorruptDataError, match=r"TOY_node_labels.txt' has 35 lines but "
                       r"TOY_graph_indicator.txt names 36 nodes.*repair TOY_node_labels.txt"):
        D.load("tu-folder", root=tmp_path)
    assert main(["data", "describe", "tu-folder", "--root", str(tmp_path), "--load"]) == 1
    assert "TOY_node_labels.txt" in capsys.readouterr().err
    runs = tmp_path / "runs"
    assert main(["train", "--dataset", "tu-folder", "--model", "gin", "--data-options",
                 f"root={tmp_path}", "--epochs", "1", "--runs-root", str(runs),
                 "--no-progress"]) == 1
    assert "TOY_node_labels.txt' has 35 lines" in capsys.readouterr().err


def test_tu_graphs_without_edges_load(tmp_path):
    # Issue 23.7: an empty NAME_A.txt is valid TU format but used to be refused.
    expected = write_tu(tmp_path)
    (tmp_path / "TOY_A.txt").write_text("")
    ds = D.load("tu-folder", root=tmp_path, val_fraction=0.25, test_fraction=0.25)
    for split in ("train", "val", "test"):
        for graph, index in zip(getattr(ds, split).graphs, ds.info["indices"][split], strict=True):
            assert graph.edge_index.shape == (2, 0) and graph.num_nodes == 3
            cls, _, node_label, _ = expected[index]
            assert int(graph.y) == (1 if cls == "1" else 0)
            assert graph.x.argmax(1).tolist() == [(v - 7) for v in node_label]


def test_tu_trailing_graphs_without_edges_keep_their_nodes(tmp_path):
    # PyG's edge slices end at the last graph with an edge; the graphs after it must remain.
    write_tu(tmp_path, n=12)
    edges = (tmp_path / "TOY_A.txt").read_text().splitlines()
    keep = [e for e in edges if max(int(v) for v in e.split(",")) <= 30]  # graphs 1..10
    (tmp_path / "TOY_A.txt").write_text("".join(f"{e}\n" for e in keep))
    ds = D.load("tu-folder", root=tmp_path, val_fraction=0.25, test_fraction=0.25)
    graphs = {int(i): g for split in ("train", "val", "test")
              for g, i in zip(getattr(ds, split).graphs, ds.info["indices"][split], strict=True)}
    assert len(graphs) == 12
    assert [graphs[i].edge_index.shape[1] for i in (10, 11)] == [0, 0]
    assert graphs[0].edge_index.shape[1] == 6 and graphs[1].edge_index.shape[1] == 4
