"""Graph classification sets in the TU text format from a user's folder (MUTAG, PROTEINS, NCI1,
IMDB-BINARY, ...).

A TU dataset ``NAME`` is a set of text files (the layout of the unpacked ``NAME.zip`` of the TU
collection):

- ``NAME_A.txt``: one edge ``i, j`` per line, 1-based node ids over the whole dataset;
- ``NAME_graph_indicator.txt``: the graph id (1-based) of each node;
- ``NAME_graph_labels.txt``: the class of each graph;
- optional ``NAME_node_labels.txt``, ``NAME_node_attributes.txt``, ``NAME_edge_labels.txt``,
  ``NAME_edge_attributes.txt``.

The files are parsed by PyTorch Geometric's TU reader (``torch_geometric.io.read_tu_data``, the
parser behind its ``TUDataset``), with ``TUDataset``'s defaults: node features are the one-hot
node labels, continuous node attributes are added only with ``use_node_attr=True``, edge
features are the one-hot edge labels (edge attributes dropped), and graph labels are mapped to
0..K-1 in sorted order. ``TUDataset`` itself is not used because it
downloads missing files and caches a processed copy beside the raw files, which would go stale
when the user's files change; here nothing is written and nothing is fetched. A dataset with
no node features at all (IMDB-BINARY, REDDIT-*) gets the one-hot node degree (PyG's
``OneHotDegree``), capped at ``max_degree``. TU sets have no official split: train/val/test
are drawn stratified with ``seed``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from mixupe.data.splits import Dataset, make_graph_dataset
from mixupe.errors import ConfigError, CorruptDataError, DataUnavailableError

__all__ = ["REQUIRED_FILES", "find_tu_folder", "load_tu_folder"]

PYG_INSTALL = "pip install torch_geometric"
REQUIRED_FILES = ("A", "graph_indicator", "graph_labels")


def _names_in(folder: Path) -> list[str]:
    return sorted(p.name[: -len("_A.txt")] for p in folder.glob("*_A.txt") if p.is_file())


def find_tu_folder(root: str | os.PathLike[str], tu_name: str | None) -> tuple[Path, str]:
    """The folder holding ``NAME_A.txt`` and the dataset name: ``root``, ``root/NAME`` or
    ``root/NAME/raw`` (``TUDataset``'s layout); ``tu_name`` may be left out when ``root`` holds
    a single TU dataset.

    Raises :class:`DataUnavailableError` naming the expected files.
    """
    base, name = Path(root), tu_name
    if not base.is_dir():
        raise DataUnavailableError(
            f"TU folder {str(base)!r} does not exist; pass root= the folder holding "
            f"NAME_{'.txt, NAME_'.join(REQUIRED_FILES)}.txt (the unpacked NAME.zip)"
        )
    if name is None:
        found = _names_in(base)
        if len(found) > 1:
            raise ConfigError(f"{str(base)!r} holds several TU datasets {found}: pass tu_name=")
        if not found:
            raise DataUnavailableError(
                f"no TU dataset in {str(base)!r}: expected NAME_A.txt, NAME_graph_indicator.txt "
                "and NAME_graph_labels.txt there (the unpacked NAME.zip); pass tu_name= to look in "
                "root/NAME or root/NAME/raw"
            )
        name = found[0]
    candidates = [base, base / name, base / name / "raw"]
    for folder in candidates:
        if (folder / f"{name}_A.txt").is_file():
            missing = [f"{name}_{k}.txt" for k in REQUIRED_FILES
                       if not (folder / f"{name}_{k}.txt").is_file()]
            if missing:
                raise DataUnavailableError(
                    f"TU dataset {name!r} in {str(folder)!r} lacks {missing}; a TU dataset needs "
                    f"{[f'{name}_{k}.txt' for k in REQUIRED_FILES]} (node labels and attributes "
                    "are optional)"
                )
            return folder, name
    raise DataUnavailableError(
        f"TU dataset {name!r} not found: expected {name}_A.txt, {name}_graph_indicator.txt and "
        f"{name}_graph_labels.txt in one of {[str(c) for c in candidates]}"
    )


def _read(folder: Path, name: str) -> tuple[Any, dict[str, torch.Tensor], dict[str, int]]:
    try:
        from torch_geometric.io import read_tu_data
    except ImportError as exc:
        raise DataUnavailableError(
            f"TU graph datasets need PyTorch Geometric; install it with `{PYG_INSTALL}`"
        ) from exc
    if (folder / f"{name}_graph_attributes.txt").is_file():
        raise ConfigError(
            f"TU dataset {name!r} has graph attributes (a regression target); mixupe trains "
            "classifiers: use a dataset with NAME_graph_labels.txt only"
        )
    counts = _check_line_counts(folder, name)
    if counts["A"] == 0:  # valid TU format (graphs without edges), which PyG cannot parse
        return _read_without_edges(read_tu_data, folder, name)
    try:
        return read_tu_data(str(folder), name)
    except (ValueError, RuntimeError, IndexError) as exc:
        raise CorruptDataError(
            f"cannot parse TU dataset {name!r} in {str(folder)!r} ({exc}); check that every file "
            "holds comma-separated integers (attributes: numbers) and replace the broken one"
        ) from exc


def _lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def _check_line_counts(folder: Path, name: str) -> dict[str, int]:
    """The non-empty line count of each file; CorruptDataError naming a file whose count
    disagrees with the node count (graph indicator), the edge count (A) or the graph count."""
    counts = {kind: _lines(folder / f"{name}_{kind}.txt") for kind in
              ("A", "graph_indicator", "graph_labels", "node_labels", "node_attributes",
               "edge_labels", "edge_attributes") if (folder / f"{name}_{kind}.txt").is_file()}
    nodes, edges = counts["graph_indicator"], counts["A"]
    if nodes == 0:
        raise CorruptDataError(
            f"{name}_graph_indicator.txt in {str(folder)!r} is empty; it needs one graph id per "
            "node: replace the file"
        )
    for kind, want, unit in (("node_labels", nodes, "node"), ("node_attributes", nodes, "node"),
                             ("edge_labels", edges, "edge"), ("edge_attributes", edges, "edge")):
        if kind in counts and counts[kind] != want:
            source = "graph_indicator" if unit == "node" else "A"
            raise CorruptDataError(
                f"{str(folder / f'{name}_{kind}.txt')!r} has {counts[kind]} lines but "
                f"{name}_{source}.txt names {want} {unit}s; it needs one line per {unit}: "
                f"replace or repair {name}_{kind}.txt"
            )
    return counts


def _read_without_edges(read_tu_data: Any, folder: Path, name: str) -> Any:
    """PyG's reader on a copy whose ``NAME_A.txt`` holds self-loops, which PyG drops."""
    with tempfile.TemporaryDirectory(prefix="mixupe-tu-") as scratch:
        for path in folder.glob(f"{name}_*.txt"):
            if path.name not in (f"{name}_A.txt", f"{name}_edge_labels.txt",
                                 f"{name}_edge_attributes.txt"):
                shutil.copyfile(path, Path(scratch) / path.name)
        (Path(scratch) / f"{name}_A.txt").write_text("1, 1\n1, 1\n")  # 2 lines: PyG squeezes 1
        try:
            return read_tu_data(scratch, name)
        except (ValueError, RuntimeError, IndexError) as exc:
            raise CorruptDataError(
                f"cannot parse TU dataset {name!r} in {str(folder)!r} ({exc}); check that every "
                "file holds comma-separated integers and replace the broken one"
            ) from exc


def _one_hot_degree(data: Any, max_degree: int | None) -> tuple[torch.Tensor, int]:
    """Node degree one-hot over 0..cap, cap = ``max_degree`` or the largest degree."""
    from torch_geometric.utils import degree

    deg = degree(data.edge_index[0], num_nodes=data.num_nodes, dtype=torch.int64)
    cap = int(deg.max()) if max_degree is None and deg.numel() else int(max_degree or 0)
    return torch.nn.functional.one_hot(deg.clamp(max=cap), cap + 1).float(), cap


def _pad_edge_slices(data: Any, slices: dict[str, torch.Tensor]) -> int:
    """The number of graphs; PyG's edge slices end at the last graph with an edge, so graphs
    without edges at the end (or everywhere) get empty edge slices here."""
    num_graphs = int(slices["x"].numel()) - 1 if "x" in slices else len(data._num_nodes)
    for key in ("edge_index", "edge_attr"):
        if key in slices and slices[key].numel() < num_graphs + 1:
            short = slices[key]
            last = short[-1:] if short.numel() else torch.zeros(1, dtype=torch.long)
            slices[key] = torch.cat([short, last.repeat(num_graphs + 1 - short.numel())])
    return num_graphs


def _drop_attributes(data: Any, sizes: dict[str, int], use_node_attr: bool) -> None:
    """As TUDataset: node attributes dropped unless ``use_node_attr`` (node labels kept),
    edge labels kept and edge attributes dropped; an empty feature matrix becomes None."""
    if data.x is not None and not use_node_attr:
        data.x = data.x[:, sizes["num_node_attributes"]:]
    if data.x is not None and data.x.shape[1] == 0:
        data.x = None
    if data.edge_attr is not None:  # as TUDataset: edge labels kept, edge attributes dropped
        data.edge_attr = data.edge_attr[:, sizes["num_edge_attributes"]:]
        if data.edge_attr.shape[1] == 0:
            data.edge_attr = None


def _node_features(graphs: list[Any], featureless: bool, max_degree: int | None,
                   use_node_attr: bool) -> str:
    """Gives featureless graphs one-hot degrees as ``x``; returns what the features are."""
    if not featureless:
        return "node labels" + (" and attributes" if use_node_attr else "")
    cap = max_degree
    if cap is None:
        cap = max(_one_hot_degree(g, None)[1] for g in graphs)
    for g in graphs:
        g.x = _one_hot_degree(g, cap)[0]
    return f"one-hot degree 0..{cap}"


def load_tu_folder(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    tu_name: str | None = None,
    use_node_attr: bool = False,
    max_degree: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    subset: int | None = None,
) -> Dataset:
    """A TU graph classification set from the user's folder (``root=``; ``tu_name=`` when the
    folder holds several); see the module docstring."""
    if root is None:
        raise ConfigError(
            "tu-folder needs root= the folder of a TU dataset (NAME_A.txt, "
            "NAME_graph_indicator.txt, NAME_graph_labels.txt) and tu_name= when it holds several"
        )
    if max_degree is not None and (
        isinstance(max_degree, bool) or not isinstance(max_degree, int) or max_degree < 1
    ):
        raise ConfigError(f"max_degree={max_degree!r} must be a positive integer or None")
    folder, name = find_tu_folder(root, tu_name)
    from torch_geometric.data import InMemoryDataset

    data, slices, sizes = _read(folder, name)
    if data.y is None:
        raise CorruptDataError(f"TU dataset {name!r} in {str(folder)!r} has no graph labels")
    num_graphs = _pad_edge_slices(data, slices)
    if data.y.numel() != num_graphs:
        raise CorruptDataError(
            f"{name}_graph_labels.txt has {data.y.numel()} labels but "
            f"{name}_graph_indicator.txt names {num_graphs} graphs; replace the broken file"
        )
    info: dict[str, Any] = {"tu_name": name, **sizes}
    _drop_attributes(data, sizes, use_node_attr)
    holder = InMemoryDataset()
    holder.data, holder.slices = data, slices
    graphs = [holder[i] for i in range(num_graphs)]
    info["node_features"] = _node_features(graphs, data.x is None, max_degree, use_node_attr)
    for g in graphs:
        g.x = g.x.float()
        g.y = g.y.reshape(1).to(torch.int64)
    num_classes = int(data.y.max()) + 1
    if num_classes < 2:
        raise ConfigError(f"TU dataset {name!r} has a single graph class; a classifier needs two")
    return make_graph_dataset(
        name="tu-folder", graphs=graphs, num_classes=num_classes,
        input_shape=(int(graphs[0].x.shape[1]),), source=str(folder), seed=seed,
        val_fraction=val_fraction, test_fraction=test_fraction, subset=subset, info=info,
    )
