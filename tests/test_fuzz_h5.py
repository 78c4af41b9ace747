"""Fuzzing the HDF5 reader and the CLI: every broken file ends in a RetinakitError (CLI: one line,
exit 2) or loads as a validated recording. Never a traceback.

The default run tries a sample of cases; `pytest -m slow tests/test_fuzz_h5.py` runs 1000+.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_recording
from retinakit.cli import main
from retinakit.errors import RetinakitError
from retinakit.io import load_recording
from retinakit.recording import Recording

FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
SLOW = settings(max_examples=int(os.environ.get("RETINAKIT_FUZZ_EXAMPLES", "400")), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

_TEMPLATE: dict[str, bytes] = {}


def template(compressed: bool) -> bytes:
    """Bytes of a small valid recording file (made once per session)."""
    key = "gz" if compressed else "raw"
    if key not in _TEMPLATE:
        import tempfile

        rec = make_recording(frame_shape=(4, 4), n_cells=2, train_bins=120, test_bins=40, n_repeats=3)
        with tempfile.TemporaryDirectory() as d:
            from retinakit.io import baccus_h5

            p = baccus_h5.save(rec, os.path.join(d, "t.h5"), compression="gzip" if compressed else None)
            _TEMPLATE[key] = p.read_bytes()
    return _TEMPLATE[key]


def check_outcome(path) -> str:
    """Load through the library and the CLI; return 'ok' or 'error', fail on anything else."""
    try:
        rec = load_recording(path)
        assert isinstance(rec, Recording)
        lib = "ok"
    except RetinakitError as exc:
        assert "\n" not in exc.one_line()
        lib = "error"
    res = CliRunner().invoke(main, ["data", "inspect", str(path), "--json", "--no-sta"])
    assert res.exit_code in (0, 2), (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output
    if res.exit_code == 2:
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
    assert (res.exit_code == 0) == (lib == "ok")
    return lib


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, bit in flips:
        b[pos % len(b)] ^= 1 << (bit % 8)
    if cut is not None:
        b = b[: cut % (len(b) + 1)]
    return bytes(b)


corruptions = st.tuples(
    st.booleans(),
    st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 7)), max_size=8),
    st.one_of(st.none(), st.integers(0, 10**7)),
)


def check_corruption_case(tmp_path_factory, case) -> None:
    compressed, flips, cut = case
    path = tmp_path_factory.mktemp("fz") / "broken.h5"
    path.write_bytes(mutate(template(compressed), flips, cut))
    check_outcome(path)


@FAST
@given(case=corruptions)
def test_fuzz_bitflips_and_truncation(tmp_path_factory, case):
    check_corruption_case(tmp_path_factory, case)


@pytest.mark.slow
@SLOW
@given(case=corruptions)
def test_fuzz_bitflips_and_truncation_slow(tmp_path_factory, case):
    check_corruption_case(tmp_path_factory, case)


# structural mutations: replace one dataset with arbitrary content
DATASETS = ["train/time", "train/stimulus", "train/response/binned", "train/response/true_rate", "test/time",
            "test/stimulus", "test/response/binned", "test/repeats/cell01", "cell_ids"]

arrays = st.one_of(
    st.just(np.zeros((0,))),
    st.just(np.array([np.nan, 1.0, np.inf])),
    st.just(np.array(["a", "b"], dtype="S1")),
    st.just(np.arange(120, 0, -1, dtype=np.float64)),
    st.just(np.ones((120, 4, 4)) * 1e300),
    st.builds(lambda shape, fill: np.full(shape, fill), st.lists(st.integers(0, 7), min_size=0, max_size=3).map(tuple), st.sampled_from([0, -1, 1.5, np.nan, 255])),
    st.builds(lambda n: np.random.default_rng(n).standard_normal((120, 4, 4)), st.integers(0, 100)),
    st.builds(lambda n: np.random.default_rng(n).integers(-5, 5, size=(2, 120)), st.integers(0, 100)),
    st.builds(lambda n: np.random.default_rng(n).integers(-5, 5, size=(3, 40)), st.integers(0, 100)),
)


def check_structural_case(tmp_path_factory, name, arr, delete_instead) -> None:
    path = tmp_path_factory.mktemp("fs") / "edited.h5"
    path.write_bytes(template(False))
    with h5py.File(path, "r+") as f:
        if name in f:
            del f[name]
        if not delete_instead:
            f[name] = arr
    check_outcome(path)


@FAST
@given(name=st.sampled_from(DATASETS), arr=arrays, delete_instead=st.booleans())
def test_fuzz_structure(tmp_path_factory, name, arr, delete_instead):
    check_structural_case(tmp_path_factory, name, arr, delete_instead)


@pytest.mark.slow
@SLOW
@given(name=st.sampled_from(DATASETS), arr=arrays, delete_instead=st.booleans())
def test_fuzz_structure_slow(tmp_path_factory, name, arr, delete_instead):
    check_structural_case(tmp_path_factory, name, arr, delete_instead)


def test_valid_template_loads(tmp_path):
    p = tmp_path / "t.h5"
    p.write_bytes(template(True))
    assert check_outcome(p) == "ok"
