"""`retinakit validate`: the suite runs end to end (quick versions) and reports against the ground truth."""

from __future__ import annotations

import json

from click.testing import CliRunner

from retinakit.cli import main
from retinakit.validate import CASES, select_cases


def test_cases_differ_from_the_bundled_sample() -> None:
    from retinakit.sample import _spec_for

    sample = {**_spec_for("naturalscene")}
    for case in CASES:
        assert case.spec.get("seed") != sample.get("seed", 0)
    kinds = {c.spec["stimulus"] for c in CASES}
    assert kinds == {"fullfield", "whitenoise", "naturalscene"}
    assert any(c.spec.get("frame_rate") == 30.0 for c in CASES)
    assert any(c.spec["n_repeats"] % 2 == 1 for c in CASES)  # an odd number of repeats, as in many real recordings


def test_unknown_case_is_a_one_line_error(tmp_path) -> None:  # noqa: ANN001
    res = CliRunner().invoke(main, ["validate", "--case", "fullfeld-30hz", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "unknown validation case" in res.output and "fullfield-30hz" in res.output
    assert not any(tmp_path.iterdir())


def test_unknown_extra_model_is_a_one_line_error(tmp_path) -> None:  # noqa: ANN001
    res = CliRunner().invoke(main, ["validate", "--quick", "--models", "rnn", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "unknown extra validation model 'rnn'" in res.output and "rcnn" in res.output


def test_quick_validation_runs_and_scores_the_truth(tmp_path) -> None:  # noqa: ANN001
    res = CliRunner().invoke(main, ["validate", "--quick", "--case", "fullfield-30hz", "--out", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    assert "fullfield-30hz-quick" in res.output
    doc = json.loads((tmp_path / "validate.json").read_text())
    (row,) = doc["cases"]
    assert row["n_cells"] == 40 and row["n_repeats"] == 9
    assert 0.95 <= row["truth_r_norm"] <= 1.05  # the true rate reaches the ceiling: the ceiling is estimated right
    assert 0.3 < row["cnn_r_norm"] <= 1.05 and 0.0 < row["ln_r_norm"] <= 1.05
    assert "temporal CNN" in row["cnn_geometry"]
    # the recurrent CNN is fit too and scored on the same cells and bins as the CNN
    assert "rcnn r/c" in res.output and row["n_rcnn_scored"] == 40
    assert 0.3 < row["rcnn_r_norm"] <= 1.05 and abs(row["rcnn_cnn_r_norm"] - row["cnn_r_norm"]) < 1e-9
    assert row["rcnn_epoch_cost"] > 0 and row["n_rcnn_strong"] + row["n_rcnn_weak"] == 40
    assert (tmp_path / "validate.png").is_file() and (tmp_path / "validate.csv").is_file()
    # a second run reuses the finished fits
    res2 = CliRunner().invoke(main, ["validate", "--quick", "--case", "fullfield-30hz", "--out", str(tmp_path), "--json", "-q"])
    assert res2.exit_code == 0
    assert json.loads(res2.output)["cases"][0]["cnn_r_norm"] == row["cnn_r_norm"]
    assert select_cases(None) == list(CASES)
