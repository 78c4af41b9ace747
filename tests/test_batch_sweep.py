"""Sweep files: validation with clear errors, expansion into points, stable ids (no jobs run here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retinakit.batch.sweep import Resources, load_sweep, point_hash
from retinakit.errors import ConfigError, DataError

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "sweep_example.toml"


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    (tmp_path / "rec.h5").write_bytes(b"")  # only its existence is checked here
    p = tmp_path / name
    p.write_text(text)
    return p


BASIC = """
[sweep]
name = "lr-seed"
out = "out"
[fit]
data = "rec.h5"
history = 8
max_epochs = 2
[grid]
lr = [0.001, 0.01]
seed = [0, 1, 2]
[resources]
cpus = 1
mem_gb = 2
time_min = 30
partition = "debug"
sbatch = { constraint = "avx2" }
"""


def test_grid_expands_to_every_combination(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, BASIC))
    assert sweep.name == "lr-seed"
    assert sweep.out == (tmp_path / "out").resolve()
    assert len(sweep.points) == 6
    combos = {(p.params["lr"], p.params["seed"]) for p in sweep.points}
    assert combos == {(lr, s) for lr in (0.001, 0.01) for s in (0, 1, 2)}
    assert all(p.params["history"] == 8 and p.params["max_epochs"] == 2 for p in sweep.points)
    assert all(p.data == (tmp_path / "rec.h5").resolve() for p in sweep.points)
    assert "data" not in sweep.points[0].options and sweep.points[0].options["lr"] == 0.001
    assert sweep.swept_keys == ["lr", "seed"]
    assert [p.id[:5] for p in sweep.points] == [f"p{i:03d}-" for i in range(6)]
    assert all(p.run_dir == sweep.out / p.id for p in sweep.points)
    assert sweep.resources == Resources(cpus=1, mem_gb=2.0, time_min=30, partition="debug", sbatch={"constraint": "avx2"})


def test_ids_are_stable_and_follow_parameters_not_order(tmp_path: Path) -> None:
    a = load_sweep(write(tmp_path, BASIC))
    # same points, keys written in another order and an extra grid value: the old points keep their hash
    reordered = BASIC.replace("lr = [0.001, 0.01]\nseed = [0, 1, 2]", "seed = [0, 1, 2, 3]\nlr = [0.001, 0.01]")
    b = load_sweep(write(tmp_path, reordered, "other.toml"))
    hashes_a = {p.id.split("-")[1]: p.params for p in a.points}
    hashes_b = {p.id.split("-")[1]: p.params for p in b.points}
    assert set(hashes_a) <= set(hashes_b) and len(hashes_b) == 8
    assert point_hash({"lr": 0.01, "seed": 1}) == point_hash({"seed": 1, "lr": 0.01})
    assert point_hash({"lr": 0.01}) != point_hash({"lr": 0.001})


def test_existing_folder_with_same_hash_is_reused(tmp_path: Path) -> None:
    first = load_sweep(write(tmp_path, BASIC))
    target = first.points[4]
    moved = first.out / f"p017-{target.id.split('-')[1]}"
    moved.mkdir(parents=True)
    again = load_sweep(write(tmp_path, BASIC))
    assert again.points[4].run_dir == moved and again.points[4].id == moved.name


def test_points_list_crossed_with_grid_and_overrides_fit(tmp_path: Path) -> None:
    text = """
[fit]
model = "cnn"
history = 8
[grid]
seed = [0, 1]
[[points]]
lr = 0.001
[[points]]
model = "ln"
ln_method = "sta"
cells = "all"
"""
    sweep = load_sweep(write(tmp_path, text))
    assert len(sweep.points) == 4
    models = sorted(p.params["model"] for p in sweep.points)
    assert models == ["cnn", "cnn", "ln", "ln"]
    ln = [p for p in sweep.points if p.params["model"] == "ln"]
    assert all(p.params["cells"] is None and p.data is None for p in ln)  # "all" cells, bundled sample
    assert set(sweep.swept_keys) == {"ln_method", "lr", "model", "seed"}  # cells "all" = the default


def test_cell_groups_and_sample(tmp_path: Path) -> None:
    text = '[fit]\ndata = "sample"\n[grid]\ncells = [[1, 2], [3], "all"]\n'
    sweep = load_sweep(write(tmp_path, text))
    assert [p.params["cells"] for p in sweep.points] == [[1, 2], [3], None]
    assert all(p.data is None for p in sweep.points)
    assert sweep.points[0].label(sweep.swept_keys) == "cells=1,2"
    assert sweep.points[2].label(sweep.swept_keys) == "cells=all"


def test_named_sample_kinds(tmp_path: Path) -> None:
    from retinakit.sample import sample_name

    sweep = load_sweep(write(tmp_path, '[fit]\ndata = "sample:whitenoise"\n'), check_data=False)
    assert sweep.points[0].data is not None and sweep.points[0].data.name == sample_name("whitenoise")
    with pytest.raises(ConfigError, match="no bundled sample 'pinknoise'"):
        load_sweep(write(tmp_path, '[fit]\ndata = "sample:pinknoise"\n', "bad.toml"), check_data=False)


def test_no_tables_gives_one_point_with_defaults(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, "", "single.toml"))
    assert len(sweep.points) == 1 and sweep.points[0].params == {}
    assert sweep.name == "single" and sweep.out.name == "single-runs"
    assert sweep.swept_keys == []


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[gird]\nlr = [1]\n", "unknown table [gird]"),
        ("[gird]\nlr = [1]\n", "did you mean 'grid'"),
        ("[grid]\nlearning_rate = [0.1]\n", "unknown option 'learning_rate' in [grid]"),
        ("[grid]\nlr_patiense = [1]\n", "did you mean 'lr_patience'"),
        ("[fit]\nhistroy = 8\n", "unknown option 'histroy' in [fit]"),
        ("[fit]\nhistroy = 8\n", "did you mean 'history'"),
        ("[[points]]\nmodle = 'ln'\n", "did you mean 'model'"),
        ("[resources]\ncpu = 2\n", "unknown key 'cpu' in [resources]"),
        ("[resources]\ncpu = 2\n", "did you mean 'cpus'"),
        ("[sweep]\nnmae = 'x'\n", "did you mean 'name'"),
        ("[grid]\nlr = 0.1\n", "grid.lr must be a non-empty list"),
        ("[grid]\nlr = []\n", "grid.lr must be a non-empty list"),
        ("[grid]\nlr = [0.1, 0.1]\n", "lists the same value twice"),
        ("[grid]\ncells = [1, 2]\n", "grid.cells must be a list of cell groups"),
        ("[grid]\nlr = [0.1]\n[[points]]\nlr = 0.2\n", "'lr' is both in [grid] and in [[points]]"),
        ("[[points]]\nseed = 1\n[[points]]\nseed = 1\n", "have the same parameters"),
        ("[grid]\nlr = [0.1, -1.0]\n", "point #2"),
        ("[grid]\nmodel = ['cnn', 'cnnn']\n", "did you mean 'cnn'"),
        ("[resources]\ncpus = 0\n", "resources.cpus must be an integer >= 1"),
        ("[resources]\nmem_gb = 'lots'\n", "resources.mem_gb must be a positive number"),
        ("[resources]\npartition = 'a b'\n", "resources.partition must be a SLURM name"),
        ("[resources]\nsbatch = { array = '0-3' }\n", "resources.sbatch.array is set by retinakit"),
        ("[resources]\nsbatch = { '--qos' = 'x' }\n", "is not an sbatch flag name"),
        ("[resources]\ntime_min = 1\nsignal_delay_s = 90\n", "signal_delay_s must be shorter"),
        ("[sweep]\nname = 'a b'\n", "sweep.name must be a simple name"),
        ("points = 3\n", "points must be an array of tables"),
        ("[fit\n", "not valid TOML"),
    ],
)
def test_bad_sweeps_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_sweep(write(tmp_path, text))
    assert needle in str(err.value), str(err.value)
    assert "sweep.toml" in str(err.value)


def test_missing_recording_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="recording 'nope.h5' does not exist"):
        load_sweep(write(tmp_path, '[fit]\ndata = "nope.h5"\n'))
    assert load_sweep(write(tmp_path, '[fit]\ndata = "nope.h5"\n'), check_data=False).points[0].data.name == "nope.h5"
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(tmp_path / "absent.toml")


def test_example_sweep_file_is_valid(tmp_path: Path) -> None:
    sweep = load_sweep(EXAMPLE, check_data=False)
    assert len(sweep.points) >= 4
    assert sweep.resources.cpus >= 1
    json.dumps([p.to_dict() for p in sweep.points])  # JSON-able
