"""Molecular graph features: molecules as PyTorch Geometric graphs, with one of two feature sets.

``"ogb"`` (the default of the molecule loaders): the nine atom and three bond properties of
PyG's ``from_rdmol`` (the OGB molecule set), each one-hot over PyG's vocabulary:

- atoms (177): atomic number (0..118), chirality tag (9), total degree (0..10), formal charge
  (-5..6), total hydrogen count (0..8), radical electrons (0..4), hybridisation (8),
  aromatic (2), in a ring (2);
- bonds (30): bond type (22), stereo (6), conjugated (2).

It needs RDKit, which perceives aromaticity and counts hydrogens.

``"basic"`` (the hand-made set of earlier versions, kept to reproduce their results): 25
binary atom features, namely element one-hot (C N O F P S Cl Br I, other), heavy-atom degree
one-hot (0..5+), formal charge one-hot (-1, 0, +1), hydrogen count one-hot (0..4+) and ring
membership; 5 bond features, namely order one-hot (single, double, triple, aromatic; bonds are
Kekulé, so the aromatic column stays 0) and ring membership. Hydrogens come from RDKit where
the molecule was read by it, else from standard valences (:func:`hydrogen_count`).

Edges are stored in both directions. Features are binary indicators, so no standardisation
is applied.
"""

from __future__ import annotations

from typing import Any

import torch

from mixupe.data.sdf import Molecule
from mixupe.errors import ConfigError, CorruptDataError, DataUnavailableError

__all__ = [
    "ATOM_FEATURES",
    "BOND_FEATURES",
    "FEATURE_SETS",
    "OGB_ATOM_FEATURES",
    "OGB_BOND_FEATURES",
    "hydrogen_count",
    "molecule_to_graph",
    "ogb_graph",
    "ring_bonds",
]

PYG_INSTALL = "pip install torch_geometric"
ELEMENTS = ("C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
ATOM_FEATURES = len(ELEMENTS) + 1 + 6 + 3 + 5 + 1
BOND_FEATURES = 5
# Sizes of PyG's from_rdmol vocabularies (x_map, e_map), checked against them by the tests.
OGB_ATOM_FEATURES = 119 + 9 + 11 + 12 + 9 + 5 + 8 + 2 + 2
OGB_BOND_FEATURES = 22 + 6 + 2
FEATURE_SETS = {"ogb": (OGB_ATOM_FEATURES, OGB_BOND_FEATURES), "basic": (ATOM_FEATURES,
                                                                        BOND_FEATURES)}

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


def _data_class() -> Any:
    try:
        from torch_geometric.data import Data
    except ImportError as exc:
        raise DataUnavailableError(
            f"graph datasets need PyTorch Geometric; install it with `{PYG_INSTALL}`"
        ) from exc
    return Data


def molecule_to_graph(molecule: Molecule, label: int) -> Any:
    """The ``"basic"`` features: a PyG ``Data`` with ``x`` (atoms, 25), ``edge_index``
    (2, 2*bonds), ``edge_attr`` (2*bonds, 5) and ``y``.

    Bonds must be Kekulé (orders 1-3); hydrogens are ``molecule.hydrogens`` when given, else
    derived from standard valences.
    """
    data_class = _data_class()
    n = len(molecule.atoms)
    degree = [0] * n
    valence = [0] * n
    atom_in_ring = [False] * n
    rings = ring_bonds(n, molecule.bonds)
    for (a, b, order), ring in zip(molecule.bonds, rings, strict=True):
        if order not in (1, 2, 3):
            raise CorruptDataError(
                f"molecule {molecule.name!r} has a bond of order {order}; the basic features "
                "need Kekulé bonds (1, 2 or 3): read the file with RDKit (`pip install rdkit`)"
            )
        for atom in (a, b):
            degree[atom] += 1
            valence[atom] += order
            atom_in_ring[atom] |= ring
    rows = []
    for i, (symbol, charge) in enumerate(zip(molecule.atoms, molecule.charges, strict=True)):
        element = ELEMENTS.index(symbol) if symbol in ELEMENTS else len(ELEMENTS)
        hydrogens = (
            molecule.hydrogens[i]
            if molecule.hydrogens is not None
            else hydrogen_count(symbol, charge, valence[i])
        )
        rows.append(
            _one_hot(element, len(ELEMENTS) + 1)
            + _one_hot(degree[i], 6)
            + _one_hot(charge + 1, 3)
            + _one_hot(hydrogens, 5)
            + [1.0 if atom_in_ring[i] else 0.0]
        )
    src, dst, attrs = [], [], []
    for (a, b, order), ring in zip(molecule.bonds, rings, strict=True):
        attr = [*_one_hot(order - 1, 4), 1.0 if ring else 0.0]
        src += [a, b]
        dst += [b, a]
        attrs += [attr, attr]
    return data_class(
        x=torch.tensor(rows, dtype=torch.float32).reshape(n, ATOM_FEATURES),
        edge_index=torch.tensor([src, dst], dtype=torch.int64).reshape(2, -1),
        edge_attr=torch.tensor(attrs, dtype=torch.float32).reshape(-1, BOND_FEATURES),
        y=torch.tensor([label], dtype=torch.int64),
    )


def _one_hot_columns(codes: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenated one-hot encodings of integer code columns, as float32."""
    parts = [
        torch.nn.functional.one_hot(codes[:, j], size) for j, size in enumerate(sizes)
    ]
    return torch.cat(parts, dim=1).to(torch.float32) if parts else codes.float()


def ogb_graph(mol: Any, label: int) -> Any:
    """The ``"ogb"`` features of an RDKit molecule: a PyG ``Data`` with ``x`` (atoms, 177),
    ``edge_index``, ``edge_attr`` (2*bonds, 30) and ``y``.

    Example:
        >>> from rdkit import Chem
        >>> g = ogb_graph(Chem.MolFromSmiles("c1cc[nH]c1"), 0)   # pyrrole
        >>> tuple(g.x.shape), tuple(g.edge_attr.shape)
        ((5, 177), (10, 30))
    """
    _data_class()
    from torch_geometric.utils.smiles import e_map, from_rdmol, x_map

    try:
        data = from_rdmol(mol)
    except ValueError as exc:  # a property outside PyG's vocabulary, e.g. degree > 10
        raise CorruptDataError(
            f"molecule {mol.GetProp('_Name') if mol.HasProp('_Name') else ''!r} has an atom "
            f"or bond property outside the OGB vocabulary ({exc}); remove it or use "
            "features='basic'"
        ) from exc
    n = mol.GetNumAtoms()
    x = _one_hot_columns(data.x.reshape(n, -1), [len(v) for v in x_map.values()])
    edge_attr = _one_hot_columns(data.edge_attr.reshape(-1, len(e_map)),
                                 [len(v) for v in e_map.values()])
    data.x = x.reshape(n, OGB_ATOM_FEATURES)
    data.edge_attr = edge_attr.reshape(-1, OGB_BOND_FEATURES)
    data.edge_index = data.edge_index.reshape(2, -1)
    data.y = torch.tensor([label], dtype=torch.int64)
    return data


def check_feature_set(features: str) -> tuple[int, int]:
    """(atom, bond) feature counts of a feature set; ConfigError for an unknown name."""
    if features not in FEATURE_SETS:
        raise ConfigError(
            f"features={features!r} is unknown: use 'ogb' (RDKit, the default) or 'basic' "
            "(the hand-made set of earlier versions)"
        )
    return FEATURE_SETS[features]
