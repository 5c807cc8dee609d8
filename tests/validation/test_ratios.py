"""The H100 / H200 phase-ratio check on decoder layers measured on both GPUs."""

from pathlib import Path

import pytest

from perfmodel.validation import ratios as R
from perfmodel.validation.records import read_records

DATA = Path(__file__).resolve().parents[2] / "validation" / "data"


def test_ratio_error_is_predicted_over_measured():
    row = R.RatioRow(("f", "decode", 1, 1, 512, None, None), 2.0, 1.0, 3.0, 1.0)
    assert row.error == pytest.approx(0.5) and row.phase == "decode"
    s = R.scores([row, R.RatioRow(("g", "decode", 1, 1, 512, None, None), 1.0, 1.0, 0.9, 1.0)])
    assert s[0]["rows"] == 2 and s[0]["max_abs_error"] == pytest.approx(0.5)
    assert s[0]["within_5pct"] == 0.0  # 0.5 and -0.1: neither within 5%


def test_committed_layers_rank_the_two_gpus_as_measured():
    a, b = R.GPUS
    rows = R.ratio_rows(read_records(DATA / f"{a}.jsonl", a), a, read_records(DATA / f"{b}.jsonl", b), b)
    by = {s["phase"]: s for s in R.scores(rows)}
    assert by["decode"]["rows"] >= 50 and by["prefill"]["rows"] >= 20
    for s in by.values():
        assert s["median_abs_error"] <= 0.05  # the buyer's comparison: within 5% for the typical layer
        assert s["within_5pct"] >= 0.8


def test_readme_table_is_current(tmp_path):
    readme = DATA.parent / "README.md"
    text = readme.read_text()
    copy = tmp_path / "README.md"
    copy.write_text(text)
    assert R.main(["--readme", str(copy)]) == 0
    assert copy.read_text() == text


def test_bad_data_folder_is_one_line(tmp_path, capsys):
    assert R.main(["--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


def test_cli_lists_the_largest_misses_first(capsys):
    assert R.main(["--worst", "3"]) == 0
    out = capsys.readouterr().out
    lines = out.split("largest misses")[1].strip().splitlines()[1:]
    assert len(lines) == 3
    errs = [abs(float(x.split(": ")[1].split("%")[0])) for x in lines]
    assert errs == sorted(errs, reverse=True)
