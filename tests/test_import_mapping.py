"""The import mapping: every bad key gives a ConfigError naming it; the shipped examples parse; unsafe inputs are refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from helpers.lab_exports import check_import, simulate_export, write_toml

from retinakit.errors import ConfigError, FormatError
from retinakit.io.importer import import_recording
from retinakit.io.mapping import load_mapping
from retinakit.io.phy import read_params

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "import_examples"

GOOD = """
[spikes]
file = "rec.mat"
variable = "units"
field = "spike_times"
unit = "samples"
sample_rate = 10000
[frames]
variable = "frame_onsets"
unit = "samples"
sample_rate = 10000
[stimulus]
variable = "stimulus"
[repeats]
variable = "repeat_starts"
unit = "samples"
length = 20.0
"""


def _msg(tmp_path: Path, text: str) -> str:
    write_toml(tmp_path / "m.toml", text)
    with pytest.raises(ConfigError) as info:
        load_mapping(tmp_path / "m.toml")
    return info.value.one_line().replace(str(tmp_path / "m.toml"), "MAPPING")


def test_good_mapping_parses_and_resolves_paths(tmp_path: Path) -> None:
    write_toml(tmp_path / "m.toml", GOOD)
    m = load_mapping(tmp_path / "m.toml")
    assert m.spikes.file == tmp_path / "rec.mat" and m.spikes.format == "matlab"
    assert m.frames.file == tmp_path / "rec.mat" and m.stimulus.file == tmp_path / "rec.mat"
    assert m.repeats is not None and m.repeats.sample_rate == 10000.0 and m.repeats.length == 20.0
    assert m.checks.frame_gaps == "error" and m.checks.realign_repeats is True


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('unit = "samples"\nsample_rate = 10000\n[frames]', 'unit = "sec"\nsample_rate = 10000\n[frames]'), "spikes.unit: expected one of seconds|ms|samples, got 'sec' in MAPPING"),
        (("field = ", "feild = "), "spikes.feild: unknown key in MAPPING; did you mean 'field'? known keys here: field, file, folder, format, id_field, ids_variable, labels_variable, sample_rate, table, unit, variable"),
        (("length = 20.0", "length = -2"), "repeats.length: expected a positive number, got -2 in MAPPING"),
        (("length = 20.0", "lenght = 20.0"), "repeats.lenght: unknown key in MAPPING; did you mean 'length'? known keys here: column, drop, file, format, index_per, index_row, index_variable, intervals, length, length_unit, sample_rate, starts, unit, value, variable"),
        (("sample_rate = 10000\n[frames]", "[frames]"), "spikes.sample_rate: missing (spikes.unit = 'samples' needs the acquisition rate in Hz) in MAPPING; e.g. spikes.sample_rate = 10000, or [recording] sample_rate = 10000"),
        (('[stimulus]\nvariable = "stimulus"\n', ""), "[stimulus] is missing in MAPPING; say where the stimulus is: [stimulus] file = ..., variable = ..."),
        (('variable = "repeat_starts"', 'variable = "repeat_starts"\nstarts = [1.0, 2.0]'), "repeats: give exactly one of repeats.starts, repeats.variable, repeats.index_variable, repeats.intervals (got repeats.starts, repeats.variable) in MAPPING; see data/FORMATS.md, section 'repeats'"),
        (('file = "rec.mat"', 'file = "rec.xyz"'), "spikes.file: cannot tell the format of 'rec.xyz' from its suffix in MAPPING; set spikes.format to one of matlab|numpy|hdf5|nwb|phy (suffixes: .h5, .hdf, .hdf5, .mat, .npy, .npz, .nwb)"),
        (("[frames]", "[frame]"), "frame: unknown key in MAPPING; did you mean 'frames'? known keys here: blocks, checks, frames, recording, repeats, spikes, stimulus, units, version"),
        (("[repeats]", "[checks]\nframe_gaps = 'skip'\n[repeats]"), "checks.frame_gaps: expected one of error|split, got 'skip' in MAPPING"),
    ],
)
def test_bad_keys_name_the_key(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    assert edit[0] in GOOD
    assert _msg(tmp_path, GOOD.replace(edit[0], edit[1], 1)) == message


def test_invalid_toml(tmp_path: Path) -> None:
    msg = _msg(tmp_path, "[spikes\nfile = 1\n")
    assert msg.startswith("the mapping is not valid TOML (") and msg.endswith("in MAPPING; fix the syntax; examples are in data/import_examples/")


def test_missing_variable_lists_the_file(tmp_path: Path) -> None:
    import scipy.io

    scipy.io.savemat(tmp_path / "rec.mat", {"frame_onsets": np.arange(3.0), "spikes": np.zeros(2)})
    write_toml(tmp_path / "m.toml", GOOD)
    with pytest.raises(ConfigError) as info:
        import_recording(tmp_path / "m.toml")
    assert info.value.what == "spikes.variable: 'units' is not in 'rec.mat'"
    assert info.value.fix == "the file holds: frame_onsets, spikes"


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_examples_parse(example: Path) -> None:
    m = load_mapping(example)
    assert m.spikes.format in ("matlab", "numpy", "hdf5", "nwb", "phy")


def test_example_matlab_struct_mapping_imports(tmp_path: Path) -> None:
    """The shipped MATLAB example is not just valid TOML: it imports a file written the way it describes."""
    from helpers.lab_exports import write_mat_struct

    exp = simulate_export(n_units=3, seed=31, repeat_frames=30)
    write_mat_struct(tmp_path / "recording.mat", exp)
    text = (EXAMPLES / "matlab_struct.toml").read_text().replace("length = 20.0", "length = 1.0")
    write_toml(tmp_path / "m.toml", text)
    rec = import_recording(tmp_path / "m.toml").recording
    check_import(rec, exp, [int(i) for i, q in zip(exp.ids, exp.quality) if q == "good"])


class _Evil:
    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (Path("/tmp/retinakit-pwned"),))


def test_object_npy_with_foreign_pickle_is_refused(tmp_path: Path) -> None:
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = np.arange(3.0), _Evil()
    with open(tmp_path / "spikes.npy", "wb") as fh:
        np.lib.format.write_array(fh, arr, allow_pickle=True)
    np.save(tmp_path / "frames.npy", np.arange(100) / 30.0)
    np.save(tmp_path / "stim.npy", np.zeros(100))
    write_toml(tmp_path / "m.toml", '[spikes]\nfile = "spikes.npy"\nunit = "seconds"\n[frames]\nfile = "frames.npy"\nunit = "seconds"\n[stimulus]\nfile = "stim.npy"\n')
    with pytest.raises(FormatError) as info:
        import_recording(tmp_path / "m.toml")
    assert "holds Python objects other than arrays (refusing to load pathlib.Path.touch)" in info.value.what or "refusing to load" in info.value.what
    assert not Path("/tmp/retinakit-pwned").exists()
    assert pickle.dumps(1)  # the standard pickle module is untouched


def test_phy_params_are_parsed_not_executed(tmp_path: Path) -> None:
    p = tmp_path / "params.py"
    p.write_text("dat_path = r'C:\\data\\rec#1.dat'\nsample_rate = 30000.  # Hz\nimport os; os.system('touch /tmp/retinakit-pwned')\nn_channels_dat = 2 ** 6\nhp_filtered = False\n")
    params = read_params(p)
    assert params == {"dat_path": "C:\\data\\rec#1.dat", "sample_rate": 30000.0, "hp_filtered": False}
    assert not Path("/tmp/retinakit-pwned").exists()
