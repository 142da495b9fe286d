"""Readers: extxyz (explicit keys), MD17/rMD17 npz, DeePMD npy systems, ASE db, and `read_arrays` for the
exact copies `writers.write_arrays` makes.

Every reader converts to eV/Å once, here, and never guesses: a missing or misnamed label is a
`DataError` naming the file, the frame and the key, listing the keys that do exist.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .. import units
from ..errors import DataError
from .dataset import Dataset
from .structure import Structure


def _atoms_keys(atoms) -> list[str]:
    keys = set(atoms.info) | set(atoms.arrays) - {"numbers", "positions"}
    if atoms.calc is not None:
        keys |= set(getattr(atoms.calc, "results", {}))
    return sorted(keys)


def _lookup(atoms, key: str):
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    if atoms.calc is not None and key in getattr(atoms.calc, "results", {}):
        return atoms.calc.results[key]
    return None


def _structure(keys: dict, **kwargs) -> Structure:
    """Build a `Structure`; a validation error is re-raised under the name the *file* uses for the field.

    ``keys`` maps a Structure field (energy, forces, ...) to the file's key, or to ``(file, key)``
    when that field lives in its own file (DeePMD's ``set.000/force.npy``).
    """
    try:
        return Structure(**kwargs)
    except DataError as err:
        where = keys.get(err.field)
        if where is None:
            raise
        file, key = where if isinstance(where, tuple) else (err.file, where)
        if (file, key) == (err.file, err.field):
            raise
        raise DataError(err.reason, file=file, frame=err.frame, field=key) from None


def read_extxyz(path, energy_key: str | None = "REF_energy", forces_key: str | None = "REF_forces",
                stress_key: str | None = None, required: tuple[str, ...] = ("energy", "forces"),
                energy_unit: str = "eV", length_unit: str = "Å", dipole_key: str | None = "REF_dipole") -> Dataset:
    """Read an extended-XYZ file with explicitly named label keys.

    ``required`` lists which labels must be present in every frame (``energy``, ``forces``,
    ``stress``, ``dipole``); a key set to None is not read at all. Units are converted to eV and Å. A dipole
    (e·Å, in the file's length unit) goes to ``info["dipole"]``, an external field (V/Å) stays ``info["field"]``.
    """
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types for malformed text
        raise DataError(f"cannot parse as extxyz: {exc}", file=str(path)) from exc
    if not frames:
        raise DataError("file holds no structures", file=str(path))
    e_f, l_f = units.energy_factor(energy_unit), units.length_factor(length_unit)
    wanted = {"energy": energy_key, "forces": forces_key, "stress": stress_key, "dipole": dipole_key}
    structures = []
    for k, atoms in enumerate(frames):
        labels = {}
        for name, key in wanted.items():
            value = _lookup(atoms, key) if key else None
            if value is None and name in required:
                raise DataError(f"label key {key!r} not found for {name}; this frame has keys "
                                f"{_atoms_keys(atoms)} (set {name}_key to the right one)",
                                file=str(path), frame=k, field=key or name)
            labels[name] = value
        try:
            energy = None if labels["energy"] is None else float(labels["energy"]) * e_f
        except (TypeError, ValueError):
            raise DataError(f"energy value {labels['energy']!r} is not a number", file=str(path), frame=k,
                            field=energy_key) from None
        forces = None if labels["forces"] is None else np.asarray(labels["forces"], dtype=float) * e_f / l_f
        stress = None if labels["stress"] is None else np.asarray(labels["stress"], dtype=float) * e_f / l_f**3
        names = {name: key for name, key in wanted.items() if key}
        info = {key: value for key, value in atoms.info.items() if key != dipole_key}
        if labels["dipole"] is not None:
            try:
                info["dipole"] = np.asarray(labels["dipole"], dtype=float) * l_f
            except (TypeError, ValueError):
                raise DataError(f"dipole {labels['dipole']!r} is not three numbers (e·Å)", file=str(path), frame=k,
                                field=dipole_key) from None
        structures.append(_structure(names, numbers=atoms.numbers, positions=atoms.positions * l_f,
                                     cell=np.array(atoms.cell) * l_f, pbc=atoms.pbc, energy=energy,
                                     forces=forces, stress=stress, info=info,
                                     source=str(path), frame=k))
    return Dataset(structures, name=str(path), label_fields={"energy": energy_key, "forces": forces_key})


_NPZ_LAYOUTS = {
    # rMD17 (andersx/rmd17-npz): kcal/mol and kcal/mol/Å, coordinates in Å.
    "rmd17": {"numbers": "nuclear_charges", "positions": "coords", "energy": "energies", "forces": "forces"},
    # original MD17 (sgdml.org): z, R, E, F in kcal/mol and kcal/mol/Å.
    "md17": {"numbers": "z", "positions": "R", "energy": "E", "forces": "F"},
}


def read_md17_npz(path, energy_unit: str = "kcal/mol", labels: str = "new") -> Dataset:
    """Read an MD17 or rMD17 ``.npz``; energies in kcal/mol are converted to eV.

    ``labels='old'`` reads the original-MD17 labels that rMD17 files carry as old_energies/old_forces.
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    if not zipfile.is_zipfile(path):
        raise DataError("not an .npz archive (not a zip file; corrupt or wrong format)", file=str(path))
    try:
        data = np.load(path, allow_pickle=False)
        keys = set(data.files)
    except Exception as exc:
        raise DataError(f"cannot read as .npz: {exc}", file=str(path)) from exc
    layout = next((lay for lay in _NPZ_LAYOUTS.values() if {lay["numbers"], lay["positions"]} <= keys), None)
    if layout is None:
        raise DataError(f"not an MD17/rMD17 file: keys {sorted(keys)}", file=str(path))
    layout = dict(layout)
    if labels == "old":
        layout.update(energy="old_energies", forces="old_forces")
    for field in ("energy", "forces"):
        if layout[field] not in keys:
            raise DataError(f"key {layout[field]!r} missing; file has {sorted(keys)}", file=str(path),
                            field=layout[field])
    try:
        numbers = np.asarray(data[layout["numbers"]]).astype(np.int64).reshape(-1)
        coords = np.asarray(data[layout["positions"]], dtype=float)
        energies = np.asarray(data[layout["energy"]], dtype=float).reshape(-1)
        forces = np.asarray(data[layout["forces"]], dtype=float)
    except Exception as exc:  # corrupt members, object arrays, non-numeric values
        raise DataError(f"cannot read the arrays: {exc}", file=str(path)) from exc
    n = len(coords)
    if coords.ndim != 3 or coords.shape[1:] != (len(numbers), 3):
        raise DataError(f"coordinates have shape {coords.shape}, expected (F, {len(numbers)}, 3)",
                        file=str(path), field=layout["positions"])
    for name, arr in ((layout["energy"], energies), (layout["forces"], forces)):
        if len(arr) != n:
            # Name the first frame that has coordinates but no label (or a label but no coordinates).
            raise DataError(f"{len(arr)} frames of {name!r} but {n} frames of {layout['positions']!r} "
                            f"(shape {arr.shape}); frame {min(len(arr), n)} is the first without a match",
                            file=str(path), frame=min(len(arr), n), field=name)
    f = units.energy_factor(energy_unit)
    names = {"numbers": layout["numbers"], "positions": layout["positions"], "energy": layout["energy"],
             "forces": layout["forces"]}
    structures = [_structure(names, numbers=numbers, positions=coords[k], energy=energies[k] * f,
                             forces=forces[k] * f, source=str(path), frame=k) for k in range(n)]
    return Dataset(structures, name=str(path), label_fields={"energy": layout["energy"], "forces": layout["forces"]})


def read_deepmd(path) -> Dataset:
    """Read a DeePMD-kit npy system (type.raw, type_map.raw, set.*/coord|energy|force|box|virial.npy), eV/Å.

    ``path`` may also be a folder holding several systems (each a folder with type.raw).
    """
    from ase.data import atomic_numbers

    path = Path(path)
    if not path.is_dir():
        raise DataError("not a DeePMD system folder", file=str(path))
    if not (path / "type.raw").exists():
        systems = sorted(p.parent for p in path.rglob("type.raw"))
        if not systems:
            raise DataError("no type.raw found (not a DeePMD system)", file=str(path))
        out = Dataset([], name=str(path))
        for sysdir in systems:
            out = out + read_deepmd(sysdir)
        return Dataset(out.structures, name=str(path), label_fields={"energy": "energy.npy", "forces": "force.npy"})
    types = np.loadtxt(path / "type.raw", dtype=np.int64, ndmin=1)
    type_map_file = path / "type_map.raw"
    if not type_map_file.exists():
        raise DataError("type_map.raw missing: element names are needed", file=str(type_map_file))
    type_map = type_map_file.read_text().split()
    unknown = [name for name in type_map if name not in atomic_numbers]
    if unknown:
        raise DataError(f"unknown element symbol(s) {unknown} in {type_map}", file=str(type_map_file),
                        field="type_map")
    bad = sorted({int(t) for t in types if not 0 <= t < len(type_map)})
    if bad:
        atoms = [int(a) for a in np.where((types < 0) | (types >= len(type_map)))[0][:10]]
        raise DataError(f"type index(es) {bad} (atoms {atoms}) out of range for type_map.raw {type_map}",
                        file=str(path / "type.raw"), field="type")
    numbers = np.array([atomic_numbers[type_map[t]] for t in types], dtype=np.int64)
    nopbc = (path / "nopbc").exists()
    structures = []
    n = len(numbers)
    for setdir in sorted(path.glob("set.*")):
        def load(name, width, required=True, nf=None):
            """``name``.npy as (frames, width), checked against ``nf`` frames before any reshape."""
            f = setdir / f"{name}.npy"
            if not f.exists():
                if required:
                    raise DataError(f"{name}.npy missing", file=str(setdir), field=name)
                return None
            try:
                arr = np.load(f, allow_pickle=False).astype(np.float64)
            except Exception as exc:
                raise DataError(f"cannot read: {exc}", file=str(f), field=name) from None
            if arr.ndim <= 1:
                # Flat arrays: all frames in a row when the size fits, else one frame (or one value each).
                if nf is not None and arr.size == nf * width:
                    arr = arr.reshape(nf, width)
                elif width > 1 or arr.ndim == 0:
                    arr = arr.reshape(1, -1)
            frames = len(arr)
            if nf is not None and frames != nf:
                raise DataError(f"shape {arr.shape} holds {frames} frames but coord.npy holds {nf}; frame "
                                f"{min(frames, nf)} is the first without a match", file=str(f),
                                frame=min(frames, nf), field=name)
            if arr.size != frames * width:
                raise DataError(f"shape {arr.shape} gives {arr.size // max(frames, 1)} values per frame, "
                                f"expected {width} ({n} atoms in type.raw)", file=str(f), frame=0, field=name)
            return arr.reshape(frames, width)

        coord = load("coord", 3 * n)
        nf = len(coord)
        energy = load("energy", 1, nf=nf).reshape(-1)
        force = load("force", 3 * n, nf=nf)
        box = None if nopbc else load("box", 9, nf=nf).reshape(nf, 3, 3)
        # A system without periodic boundaries has no stress; its virial (if any) is not read.
        virial = None if nopbc else load("virial", 9, required=False, nf=nf)
        names = {"positions": (str(setdir / "coord.npy"), "coord"), "energy": (str(setdir / "energy.npy"), "energy"),
                 "forces": (str(setdir / "force.npy"), "force"), "cell": (str(setdir / "box.npy"), "box"),
                 "stress": (str(setdir / "virial.npy"), "virial")}
        for k in range(nf):
            cell = np.zeros((3, 3)) if box is None else box[k]
            stress = None
            if virial is not None:
                volume = abs(np.linalg.det(cell))
                # DeePMD's virial is −dE/dε; ASE stress is (dE/dε)/V. (A zero volume is reported on box.)
                stress = -virial[k].reshape(3, 3) / volume if volume > 1e-6 else None
            structures.append(_structure(names, numbers=numbers, positions=coord[k].reshape(n, 3), cell=cell,
                                         pbc=not nopbc, energy=energy[k], forces=force[k].reshape(n, 3),
                                         stress=stress, source=str(setdir), frame=k))
    if not structures:
        raise DataError("no set.* folders with frames", file=str(path))
    return Dataset(structures, name=str(path), label_fields={"energy": "energy.npy", "forces": "force.npy"})


def read_ase_db(path, energy_key: str = "energy", forces_key: str = "forces", stress_key: str | None = None,
                energy_unit: str = "eV", required: tuple[str, ...] = ("energy", "forces")) -> Dataset:
    """Read an ASE database; labels come from the stored calculator results or from ``row.data``."""
    import ase.db

    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    try:
        rows = list(ase.db.connect(str(path)).select())
    except Exception as exc:
        raise DataError(f"cannot open as an ASE database: {exc}", file=str(path)) from exc
    f = units.energy_factor(energy_unit)
    structures = []
    for k, row in enumerate(rows):
        labels = {}
        for name, key in (("energy", energy_key), ("forces", forces_key), ("stress", stress_key)):
            value = None
            if key:
                value = row.get(key) if key in row else (row.data.get(key) if key in row.data else None)
            if value is None and name in required:
                raise DataError(f"label key {key!r} not found; row has {sorted(set(row) | set(row.data))}",
                                file=str(path), frame=k, field=key or name)
            labels[name] = value
        names = {"energy": energy_key, "forces": forces_key, "stress": stress_key}
        structures.append(_structure(
            {name: key for name, key in names.items() if key},
            numbers=row.numbers, positions=row.positions, cell=np.array(row.cell), pbc=row.pbc,
            energy=None if labels["energy"] is None else float(np.asarray(labels["energy"]).reshape(-1)[0]) * f,
            forces=None if labels["forces"] is None else np.asarray(labels["forces"], float).reshape(-1, 3) * f,
            stress=None if labels["stress"] is None else np.asarray(labels["stress"], float) * f,
            source=str(path), frame=k))
    return Dataset(structures, name=str(path), label_fields={"energy": energy_key, "forces": forces_key})


def _read_hdf5(path, cache_mb: float = 256.0, required: tuple[str, ...] = ()) -> Dataset:
    """An ffspace HDF5 structures file (`ffspace.data.hdf5`), streamed through a block cache of ``cache_mb`` MiB;
    ``required`` as for the other formats, except that nothing is required by default (see `read_hdf5`)."""
    from .hdf5 import read_hdf5

    return read_hdf5(path, cache_mb=cache_mb, required=tuple(required))


FORMATS = {"extxyz": read_extxyz, "md17": read_md17_npz, "deepmd": read_deepmd, "ase-db": read_ase_db,
           "hdf5": _read_hdf5}


def read_arrays(path) -> Dataset:
    """A dataset written by `writers.write_arrays`, exactly as it was (no pickles are read)."""
    with np.load(path, allow_pickle=False) as f:
        a = {k: f[k] for k in f.files}
    meta = json.loads(str(a["meta"]))
    ends = np.cumsum(a["n_atoms"])
    structures = [Structure(numbers=a["numbers"][i:j], positions=a["positions"][i:j], cell=a["cell"][k],
                            pbc=a["pbc"][k], energy=float(a["energy"][k]) if a["has_energy"][k] else None,
                            forces=a["forces"][i:j] if a["has_forces"][k] else None,
                            stress=a["stress"][k] if a["has_stress"][k] else None, info=meta["info"][k],
                            source=meta["source"][k], frame=meta["frame"][k])
                  for k, (i, j) in enumerate(zip(ends - a["n_atoms"], ends))]
    return Dataset(structures, meta["name"])


def guess_format(path) -> str:
    p = Path(path)
    if p.is_dir():
        return "deepmd"
    suffix = p.suffix.lower()
    if suffix in (".xyz", ".extxyz"):
        return "extxyz"
    if suffix == ".npz":
        return "md17"
    if suffix == ".db":
        return "ase-db"
    if suffix in (".h5", ".hdf5"):
        return "hdf5"
    raise DataError(f"cannot tell the format from the name; give format= one of {sorted(FORMATS)}", file=str(p))


def read_dataset(path, format: str | None = None, **options) -> Dataset:
    """Read any supported format. ``options`` go to the format's reader (energy_key, forces_key,
    stress_key, energy_unit, required, ...); an option set to None keeps that reader's own default,
    and an option the format cannot use is an error rather than silently ignored."""
    import inspect

    path = os.fspath(path)
    unit_check = options.pop("unit_check", None) or "error"
    fmt = format or guess_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; known: {sorted(FORMATS)}", file=path)
    reader = FORMATS[fmt]
    accepted = set(inspect.signature(reader).parameters) - {"path"}
    options = {k: v for k, v in options.items() if v is not None}
    unusable = sorted(set(options) - accepted)
    if unusable:
        raise DataError(f"option(s) {unusable} do not apply to the {fmt} format (it takes {sorted(accepted)})",
                        file=path)
    dataset = reader(path, **options).require_nonempty()
    if unit_check != "off":
        from .label_check import check_labels

        defaults = {k: p.default for k, p in inspect.signature(reader).parameters.items()}
        unit = options.get("energy_unit", defaults.get("energy_unit", "eV"))
        check_labels(dataset, energy_unit=unit, mode=unit_check)
    return dataset
