"""A plain-Python reader for V2000 SD files: the ``"basic"`` molecule features, no RDKit needed.

Only what molecular graphs need: atom symbols, formal charges (atom block and ``M  CHG``),
bonds with their order, and the data properties. Hydrogen counts are later derived from
standard valences, which is right only for Kekulé structures of closed-shell molecules, so
the reader refuses what it cannot count correctly: aromatic bonds (bond type 4), radicals
(charge code 4, ``M  RAD``) and atom-block valence or hydrogen-count overrides. RDKit
(``pip install rdkit``) reads all of these; :mod:`mixupe.data.molecules` uses it for the
default ``"ogb"`` features.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mixupe.errors import CorruptDataError

__all__ = ["RDKIT_INSTALL", "Molecule", "parse_sdf", "read_sdf"]

# Atom-block charge codes of the V2000 format (0 = uncharged, 4 = doublet radical).
_CHARGE_CODES = {0: 0, 1: 3, 2: 2, 3: 1, 4: 0, 5: -1, 6: -2, 7: -3}


@dataclass
class Molecule:
    """One molecule: heavy atoms as element symbols, bonds as (i, j, order) with 0-based i, j.

    Bond order: 1, 2 or 3. ``hydrogens`` holds each atom's hydrogen count when the reader
    knows it (RDKit); None means "derive it from standard valences" (this module's reader).
    """

    name: str
    atoms: list[str]
    charges: list[int]
    bonds: list[tuple[int, int, int]]
    properties: dict[str, str] = field(default_factory=dict)
    hydrogens: list[int] | None = None


RDKIT_INSTALL = "pip install rdkit"
_UNREADABLE = (
    "this plain reader (features='basic') cannot count hydrogens correctly there; read the "
    f"file with RDKit (`{RDKIT_INSTALL}`, features='ogb') or convert it to a Kekulé form"
)


def _int_field(line: str, start: int, stop: int, what: str, where: str) -> int:
    text = line[start:stop].strip()
    try:
        return int(text) if text else 0
    except ValueError as exc:
        raise CorruptDataError(
            f"{where}: {what} field {text!r} in line {line!r} is not an integer; "
            "the SD file is corrupted, replace it"
        ) from exc


def _parse_record(lines: list[str], where: str) -> Molecule:
    n_atoms, n_bonds = _counts(lines, where)
    atoms, charges = _atom_block(lines[4 : 4 + n_atoms], where)
    bonds = _bond_block(lines[4 + n_atoms : 4 + n_atoms + n_bonds], n_atoms, where)
    rest = lines[4 + n_atoms + n_bonds :]
    properties_start, charges = _properties_block(rest, charges, n_atoms, where)
    properties = _data_items(rest[properties_start:])
    return Molecule(lines[0].strip(), atoms, charges, bonds, properties)


def _counts(lines: list[str], where: str) -> tuple[int, int]:
    """The atom and bond counts of the counts line, checked against the record's length."""
    if len(lines) < 4:
        raise CorruptDataError(f"{where}: record has {len(lines)} lines, too short for a molfile")
    counts = lines[3]
    if "V3000" in counts:
        raise CorruptDataError(f"{where}: V3000 molfiles are not supported; convert to V2000")
    n_atoms = _int_field(counts, 0, 3, "atom count", where)
    n_bonds = _int_field(counts, 3, 6, "bond count", where)
    if len(lines) < 4 + n_atoms + n_bonds:
        raise CorruptDataError(
            f"{where}: counts line declares {n_atoms} atoms and {n_bonds} bonds but the record "
            f"has only {len(lines) - 4} lines after the header; the file is truncated, replace it"
        )
    return n_atoms, n_bonds


def _atom_block(lines: list[str], where: str) -> tuple[list[str], list[int]]:
    """Element symbols and atom-block charges; radicals and H-count or valence overrides are
    refused (this reader could not count the hydrogens)."""
    atoms: list[str] = []
    charges: list[int] = []
    for line in lines:
        symbol = line[31:34].strip()
        if not symbol or not symbol[0].isalpha():
            raise CorruptDataError(f"{where}: bad atom line {line!r}; replace the file")
        code = _int_field(line, 36, 39, "charge", where)
        if code == 4:
            raise CorruptDataError(f"{where}: atom line {line!r} marks a radical; {_UNREADABLE}")
        if _int_field(line, 42, 45, "hydrogen count", where) or _int_field(
            line, 48, 51, "valence", where
        ):
            raise CorruptDataError(
                f"{where}: atom line {line!r} overrides the hydrogen count or valence; "
                f"{_UNREADABLE}"
            )
        atoms.append(symbol)
        charges.append(_CHARGE_CODES.get(code, 0))
    return atoms, charges


def _bond_block(lines: list[str], n_atoms: int, where: str) -> list[tuple[int, int, int]]:
    """Bonds as 0-based (i, j, order); aromatic bonds are refused."""
    bonds: list[tuple[int, int, int]] = []
    for line in lines:
        a = _int_field(line, 0, 3, "bond atom", where)
        b = _int_field(line, 3, 6, "bond atom", where)
        order = _int_field(line, 6, 9, "bond type", where)
        if order == 4:
            raise CorruptDataError(
                f"{where}: bond line {line!r} is aromatic (bond type 4); {_UNREADABLE}"
            )
        if not (1 <= a <= n_atoms and 1 <= b <= n_atoms) or a == b or order not in (1, 2, 3):
            raise CorruptDataError(f"{where}: bad bond line {line!r}; replace the file")
        bonds.append((a - 1, b - 1, order))
    return bonds


def _properties_block(rest: list[str], charges: list[int], n_atoms: int,
                      where: str) -> tuple[int, list[int]]:
    """The lines after the bonds up to ``M  END``: where the data items start (the index
    after ``M  END``), and the charges (``M  CHG`` lines supersede the atom block's)."""
    charge_lines_seen = False
    for k, line in enumerate(rest):
        if line.startswith("M  END"):
            return k + 1, charges
        if line.startswith("M  RAD"):
            raise CorruptDataError(f"{where}: line {line!r} marks radicals; {_UNREADABLE}")
        if line.startswith("M  CHG"):
            # "M  CHG" supersedes every atom-block charge of the molecule.
            if not charge_lines_seen:
                charges = [0] * n_atoms
                charge_lines_seen = True
            _charge_line(line, charges, n_atoms, where)
    raise CorruptDataError(f"{where}: no 'M  END' line; the file is truncated, replace it")


def _charge_line(line: str, charges: list[int], n_atoms: int, where: str) -> None:
    """Apply one ``M  CHG`` line's (atom, charge) pairs to ``charges`` in place."""
    fields = line.split()[3:]
    for atom, value in zip(fields[0::2], fields[1::2], strict=False):
        try:
            index, charge = int(atom) - 1, int(value)
        except ValueError as exc:
            raise CorruptDataError(f"{where}: bad charge line {line!r}") from exc
        if not 0 <= index < n_atoms:
            raise CorruptDataError(f"{where}: charge line {line!r} names a missing atom")
        charges[index] = charge


def _data_items(lines: list[str]) -> dict[str, str]:
    """The ``> <KEY>`` data items after ``M  END``: key -> value (lines joined, stripped)."""
    properties: dict[str, str] = {}
    key: str | None = None
    values: list[str] = []
    for line in lines:
        if line.startswith(">"):
            if key is not None:
                properties[key] = "\n".join(values).strip()
            start, stop = line.find("<"), line.find(">", line.find("<") + 1)
            key = line[start + 1 : stop] if 0 <= start < stop else line[1:].strip()
            values = []
        elif key is not None:
            values.append(line)
    if key is not None:
        properties[key] = "\n".join(values).strip()
    return properties


def parse_sdf(text: str, *, source: str = "<string>") -> list[Molecule]:
    """Parse the text of an SD file into molecules; raise CorruptDataError on malformed records.

    Example:
        >>> mol = "water\\n\\n\\n  1  0  0  0  0  0  0  0  0  0999 V2000\\n"
        >>> mol += "    0.0000    0.0000    0.0000 O   0  0\\nM  END\\n$$$$\\n"
        >>> parse_sdf(mol)[0].atoms
        ['O']
    """
    records: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("$$$$"):
            records.append([])
        else:
            records[-1].append(line)
    if records[-1] and any(line.strip() for line in records[-1]):
        raise CorruptDataError(
            f"{source}: the last record does not end with '$$$$'; the file is truncated, replace it"
        )
    records = records[:-1]
    return [_parse_record(r, f"{source} record {i + 1}") for i, r in enumerate(records)]


def read_sdf(path: str | os.PathLike[str]) -> list[Molecule]:
    """Read an SD file from disk (see :func:`parse_sdf`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptDataError(f"cannot read {str(path)!r} ({exc}); replace the file") from exc
    return parse_sdf(text, source=str(path))
