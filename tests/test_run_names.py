"""Run names do not depend on where the data is mounted (issue 23.4)."""

from __future__ import annotations

import os
import shutil

from mixupe.engine.config import TrainConfig


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
