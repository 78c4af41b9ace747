"""Safe loading: checkpoints hold tensors + JSON only, load with ``weights_only=True``, carry a
format version and a SHA-256 checksum; a pickle payload is refused without running it.

The malicious files are real: each carries an object whose ``__reduce__`` writes a marker file
when unpickled (a control load with ``weights_only=False`` shows that it does), and the tests
assert that retinakit refuses them with a one-line error and that the marker never appears.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retinakit.cli import main
from retinakit.errors import CheckpointError
from retinakit.fitting import checkpoint as ck
from retinakit.fitting.run_folder import load_run, save_model
from retinakit.models import build_model
from retinakit.models.fitted import FittedModel

FAST = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
SLOW = settings(max_examples=int(os.environ.get("RETINAKIT_FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)


class Payload:
    """Unpickling this object runs code: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({self.marker!r}, 'w').write('the payload ran')",))


def tiny_fitted() -> FittedModel:
    """A small untrained CNN with complete metadata (no fit needed)."""
    torch.manual_seed(0)
    model = build_model("cnn", 6, (8, 8), 2, filters=(2, 2), kernels=(3, 3))
    meta = {
        "model": model.spec(), "kind": "cnn", "history": 6, "frame_dt": 0.01, "frame_shape": [8, 8], "cell_ids": [1, 2],
        "stim_mean": 0.0, "stim_std": 1.0, "stim_min": -1.0, "stim_max": 1.0, "data_sha256": "0" * 64,
        "data_source": "<test>", "stimulus_kind": "whitenoise",
    }
    return FittedModel(model=model.eval(), meta=meta)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: Any) -> Path:
    p = tmp_path_factory.mktemp("safe") / "model.pt"
    save_model(p, tiny_fitted())
    return p


def _state(p: Path) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_run(p).model.state_dict().items()}


def _cli_one_line_error(args: list[str]) -> str:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    return lines[0]


# ----------------------------------------------------------------------------- malicious files
def _evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    """Several ways to smuggle a pickle payload into a checkpoint file."""
    out: dict[str, Path] = {}
    good_tensors = {"w": torch.zeros(2)}
    # 1. the whole file is the payload object
    out["top-level object"] = folder / "top.pt"
    torch.save(Payload(marker), out["top-level object"])
    # 2. a retinakit-looking checkpoint whose JSON field is the payload
    out["payload in the json field"] = folder / "json.pt"
    torch.save({"format": ck.FORMAT_NAME, "version": ck.FORMAT_VERSION, "json": Payload(marker), "tensors": good_tensors, "sha256": "0" * 64}, out["payload in the json field"])
    # 3. ... or inside the tensor table
    out["payload in the tensor table"] = folder / "tensors.pt"
    torch.save({"format": ck.FORMAT_NAME, "version": ck.FORMAT_VERSION, "json": "{}", "tensors": {"w": Payload(marker)}, "sha256": "0" * 64}, out["payload in the tensor table"])
    # 4. a plain (non-zip) pickle file
    out["plain pickle"] = folder / "plain.pt"
    out["plain pickle"].write_bytes(pickle.dumps({"format": ck.FORMAT_NAME, "x": Payload(marker)}))
    # 5. a legacy (pre-1.6, non-zip) torch file
    out["legacy torch format"] = folder / "legacy.pt"
    torch.save({"x": Payload(marker)}, out["legacy torch format"], _use_new_zipfile_serialization=False)
    return out


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: loading the malicious file the unsafe way DOES run its code (so the refusals below mean something)."""
    marker = tmp_path / "control_marker"
    files = _evil_files(tmp_path, marker)
    torch.load(files["top-level object"], weights_only=False)
    assert marker.read_text() == "the payload ran"


@pytest.mark.parametrize("case", ["top-level object", "payload in the json field", "payload in the tensor table", "plain pickle", "legacy torch format"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch's note on the plain pickle it then refuses
def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path: Path, case: str) -> None:
    marker = tmp_path / "PWNED"
    path = _evil_files(tmp_path, marker)[case]
    with pytest.raises(CheckpointError) as info:
        ck.load_checkpoint(path)
    assert not marker.exists()
    msg = info.value.one_line()
    assert "\n" not in msg and str(path) in msg
    assert "pickled Python objects" in msg or "cannot be read" in msg, msg
    with pytest.raises(CheckpointError):
        load_run(path)
    assert not marker.exists()
    # the commands that read fitted models refuse it in one line, exit status 2
    line = _cli_one_line_error(["check", str(path)])
    assert str(path.name) in line
    _cli_one_line_error(["probe", str(path), "--stimulus", "step"])
    assert not marker.exists()


def test_malicious_model_in_a_run_folder_is_refused(tmp_path: Path, model_file: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "PWNED"
    torch.save({"format": ck.FORMAT_NAME, "version": 1, "json": Payload(marker), "tensors": {}, "sha256": ""}, run / "model.pt")
    (run / "DONE").write_text("x\n")
    line = _cli_one_line_error(["check", str(run)])
    assert "refusing to load" in line and "pickled Python objects" in line
    assert not marker.exists()


def test_loading_uses_weights_only(monkeypatch: pytest.MonkeyPatch, model_file: Path) -> None:
    seen: list[Any] = []
    real = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_run(model_file)
    assert seen == [True]


# ----------------------------------------------------------------------------- integrity
def test_checkpoint_roundtrip_tensors_and_json(tmp_path: Path) -> None:
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b/c": torch.tensor([1, 2], dtype=torch.int64), "empty": torch.zeros(0)}
    info = {"kind": "x", "n": 3, "v": [1.5, None, "s"], "np": np.float32(2.5), "arr": np.arange(3)}
    p = ck.save_checkpoint(tmp_path / "c.pt", tensors, info)
    back, meta = ck.load_checkpoint(p)
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)
    assert meta == {"kind": "x", "n": 3, "v": [1.5, None, "s"], "np": 2.5, "arr": [0, 1, 2]}
    # the file is a plain torch zip of tensors + strings: it holds no pickled class other than torch's own
    with zipfile.ZipFile(p) as zf:
        pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        text = zf.read(pkl)
    assert b"retinakit" not in text.replace(b"retinakit-checkpoint", b"") and b"numpy" not in text


def _resave(src: Path, dst: Path, edit: Any) -> None:
    payload = torch.load(src, weights_only=True)
    edit(payload)
    torch.save(payload, dst)


@pytest.mark.parametrize(
    "what,edit,expect",
    [
        ("a weight changed", lambda p: p["tensors"].__setitem__(next(iter(p["tensors"])), next(iter(p["tensors"].values())) + 1), "checksum"),
        ("the JSON changed", lambda p: p.__setitem__("json", p["json"].replace('"cnn"', '"ln"', 1)), "checksum"),
        ("a tensor removed", lambda p: p["tensors"].pop(next(iter(p["tensors"]))), "checksum"),
        ("a newer format version", lambda p: p.__setitem__("version", ck.FORMAT_VERSION + 1), "not supported"),
        ("another format", lambda p: p.__setitem__("format", "something-else"), "not a retinakit checkpoint"),
        ("no checksum", lambda p: p.pop("sha256"), "missing its JSON, tensors or checksum"),
        ("not a dict", lambda p: p.clear(), "not a retinakit checkpoint"),
    ],
)
def test_edited_checkpoints_are_refused(tmp_path: Path, model_file: Path, what: str, edit: Any, expect: str) -> None:
    dst = tmp_path / "edited.pt"
    _resave(model_file, dst, edit)
    with pytest.raises(CheckpointError) as info:
        load_run(dst)
    assert expect in info.value.one_line(), (what, info.value.one_line())
    assert expect in _cli_one_line_error(["check", str(dst)])


def test_missing_and_empty_and_foreign_files(tmp_path: Path) -> None:
    for name, data in [("empty.pt", b""), ("text.pt", b"hello"), ("zip.pt", _zip_bytes())]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError):
            load_run(tmp_path / name)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_run(tmp_path / "nope.pt")
    run = tmp_path / "unfinished"
    run.mkdir()
    with pytest.raises(CheckpointError, match="is an empty folder, not a run"):
        load_run(run)


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"not a pickle")
    return buf.getvalue()


# ----------------------------------------------------------------------------- fuzzing model files
damage = st.tuples(st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 7)), max_size=6), st.one_of(st.none(), st.integers(0, 10**7)))


def check_damage_case(tmp_path_factory: Any, model_file: Path, case: tuple[list[tuple[int, int]], int | None]) -> None:
    flips, cut = case
    b = bytearray(model_file.read_bytes())
    for pos, bit in flips:
        b[pos % len(b)] ^= 1 << bit
    if cut is not None:
        b = b[: cut % (len(b) + 1)]
    p = tmp_path_factory.mktemp("ckfz") / "model.pt"
    p.write_bytes(bytes(b))
    try:
        state = _state(p)
    except CheckpointError as exc:
        assert "\n" not in exc.one_line()
        return
    # it loaded: then every tensor must be exactly what was saved (the flips hit zip padding or metadata only)
    want = _state(model_file)
    assert set(state) == set(want) and all(torch.equal(state[k], want[k]) for k in want)


@FAST
@given(case=damage)
def test_fuzz_model_file(tmp_path_factory: Any, model_file: Path, case: Any) -> None:
    check_damage_case(tmp_path_factory, model_file, case)


@pytest.mark.slow
@SLOW
@given(case=damage)
def test_fuzz_model_file_slow(tmp_path_factory: Any, model_file: Path, case: Any) -> None:
    check_damage_case(tmp_path_factory, model_file, case)
