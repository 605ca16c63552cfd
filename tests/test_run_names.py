"""Run names do not depend on where the data is mounted (issue 23.4) and hold only the fields
that apply to the run (issue 23.1, 23.14); runs stored under an earlier rule's name are found."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mixupe.engine.config import TrainConfig
from mixupe.engine.naming import current_name


def write_folder(folder, text="1, 2\n2, 1\n"):
    folder.mkdir(parents=True)
    (folder / "TOY_A.txt").write_text(text)
    (folder / "TOY_graph_labels.txt").write_text("1\n2\n")
    return folder


def cfg_for(root, **options):
    return TrainConfig(dataset="tu-folder", model="gin", data_options={"root": root, **options})


def test_relative_absolute_and_moved_paths_name_one_run(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "data" / "TOY")
    monkeypatch.chdir(tmp_path)
    absolute, relative = cfg_for(str(folder)), cfg_for(os.path.join("data", "TOY"))
    moved = tmp_path / "elsewhere" / "mnt" / "TOY"
    shutil.copytree(folder, moved)
    elsewhere = cfg_for(str(moved))
    assert absolute.run_name() == relative.run_name() == elsewhere.run_name()
    assert absolute.config_hash() == relative.config_hash() == elsewhere.config_hash()
    name = absolute.run_name()
    assert str(tmp_path).strip("/").split("/")[0] not in name and "data" not in name
    assert "TOY" in name  # named after the folder's stated name
    assert absolute.to_dict()["data_options"]["root"] == str(folder)  # config.json keeps it


def test_different_content_names_another_run(tmp_path):
    one = write_folder(tmp_path / "a" / "TOY")
    two = write_folder(tmp_path / "b" / "TOY", text="1, 2\n2, 1\n2, 2\n")
    assert cfg_for(str(one)).run_name() != cfg_for(str(two)).run_name()
    assert cfg_for(str(one)).config_hash() != cfg_for(str(two)).config_hash()


def test_cache_dir_is_not_part_of_the_name(tmp_path):
    folder = write_folder(tmp_path / "TOY")
    plain = cfg_for(str(folder))
    cached = cfg_for(str(folder), cache_dir=str(tmp_path / "cache"))
    assert plain.run_name() == cached.run_name()
    assert plain.config_hash() == cached.config_hash()
    assert cfg_for(str(folder), subset=5).run_name() != plain.run_name()  # content options stay


# ------------------------------------------------------------------ fields that apply (23.1)
@pytest.mark.parametrize(
    ("options", "method_part"),
    [  # the method part written out by hand from the rule "only the fields that apply"
        ({"method": "regmixup", "alpha": 10.0, "eta": 1.0}, "regmixup-a10-eta1"),
        ({"method": "mixup-ce", "alpha": 0.5, "eta": 0.01}, "mixup-ce-a0.5-eta0.01"),
        ({"method": "regmixup", "alpha": 10.0, "eta": 1.0, "mixing": "cutmix"},
         "regmixup-a10-eta1-mixcutmix"),
        ({"method": "resizemix", "alpha": 0.5}, "resizemix"),
        ({"method": "mixupe", "mixing": "resizemix"}, "mixupe-v3-eta0.001-t1-sign-1-mixresizemix"),
        ({"method": "mixupe", "version": 3, "eta": 0.1}, "mixupe-v3-a1-eta0.1-t1-sign-1"),
        ({"method": "mixupe", "version": 4, "eta": 0.1}, "mixupe-v4-a1-eta0.1-sign-1"),
        ({"method": "mixupe", "version": 2, "eta": 0.1}, "mixupe-v2-a1-eta0.1"),
        ({"method": "mixup", "alpha": 0.2}, "mixup-a0.2"),
        ({"method": "erm"}, "erm"),
    ],
)
def test_a_run_name_holds_only_the_fields_that_apply(options, method_part):
    cfg = TrainConfig(**options)
    assert cfg.run_name().split("/")[2] == method_part
    # the name an earlier rule gave it maps to the current one; the hash is shared
    assert all(current_name(n) == cfg.run_name() for n in cfg.run_names())
    assert len({n.rsplit("-", 1)[1] for n in cfg.run_names()}) == 1


def _fake_run(root: Path, name: str, cfg: TrainConfig) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "run_name": name}))
    (path / "result.json").write_text(json.dumps({"failed": False, "test": {"acc": 0.5}}))
    return path


def test_a_run_stored_under_an_earlier_name_is_found_and_resumed_in_place(tmp_path):
    from mixupe.bench.rundirs import RunReader
    from mixupe.engine.rundir import RunDir

    cfg = TrainConfig(method="mixup-ce", alpha=0.5, eta=0.01, epochs=3)
    legacy = cfg.run_name().replace("-eta0.01/", "-eta0.01-t1-sign-1/")  # the first rules
    assert legacy in cfg.run_names() and legacy != cfg.run_name()
    path = _fake_run(tmp_path, legacy, cfg)
    rec = RunReader(tmp_path)(cfg.run_name())
    assert rec.status == "complete" and rec.name == legacy and rec.path == path
    assert RunDir(tmp_path, cfg).path == path  # a rerun resumes or skips it, no second run
    other = TrainConfig(method="mixup-ce", alpha=0.5, eta=0.1, epochs=3)
    assert RunReader(tmp_path)(other.run_name()).status == "missing"
    assert RunDir(tmp_path, other).path == tmp_path / other.run_name()


RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.skipif(not (RESULTS / "_packs").is_dir(), reason="no committed run logs here")
def test_committed_packed_runs_are_found_under_their_current_names():
    from mixupe.bench.rundirs import RunReader

    reader = RunReader(RESULTS)
    legacy = [n for n in reader.names() if "/mixup-ce-" in n and "-t1-sign-1" in n][:3]
    assert legacy
    for name in legacy:
        cfg = TrainConfig.from_stored(reader(name).config)
        assert cfg.run_name() != name
        fresh = RunReader(RESULTS)(cfg.run_name())
        assert fresh.status == "complete" and fresh.name == name
        assert fresh.result == reader(name).result


def test_repacking_keeps_runs_stored_under_an_earlier_name(tmp_path):
    """A pack re-written from a root that holds its earlier runs only as that pack (the suite
    packed in pieces) keeps the entries stored under the first rules' names; a directory
    under such a name is packed under it too. Before, both were dropped and the re-pack was
    refused as holding fewer runs."""
    from mixupe.bench.rundirs import PACK_DIR, RunReader, write_pack

    cfgs = [TrainConfig(method="mixup-ce", alpha=0.5, eta=eta, epochs=3) for eta in (0.01, 0.1)]
    legacy = [c.run_name().replace(f"-eta{c.eta}/", f"-eta{c.eta}-t1-sign-1/") for c in cfgs]
    for old, c in zip(legacy, cfgs, strict=True):
        assert old in c.run_names() and old != c.run_name()
    first, later = tmp_path / "first", tmp_path / "later"
    _fake_run(first, legacy[0], cfgs[0])
    pack = later / PACK_DIR / "suite.json.gz"
    names = [c.run_name() for c in cfgs]  # what the suite asks for: the current names
    assert write_pack(first, names, pack) == 1
    _fake_run(later, legacy[1], cfgs[1])  # a second piece, trained under an earlier name
    assert write_pack(later, names, pack) == 2
    reader = RunReader(later)
    shutil.rmtree(later / legacy[1].split("/")[0])
    for cfg, old in zip(cfgs, legacy, strict=True):
        rec = reader(cfg.run_name())
        assert rec.status == "complete" and rec.name == old and rec.path == pack
