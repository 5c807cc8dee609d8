"""The report on the committed records: runs, holds out families, writes the table."""

from pathlib import Path

import numpy as np
import pytest

from perfmodel.validation.report import START, END, Score, main, replace_section, scores

DATA = Path(__file__).resolve().parents[2] / "validation" / "data"


def test_scores_rows_and_overall():
    recs = [
        {"op": "gemm", "m": 1, "n": 8, "k": 8, "measured_s": 1.0, "impl": "cublas", "family": "f"},
        {"op": "gemm", "m": 2, "n": 8, "k": 8, "measured_s": 2.0, "impl": "cublas", "family": "f"},
    ]
    s = {x.key: x for x in scores(recs, np.array([1.1, 1.0]))}
    assert s["gemm"].n == 2 and np.isclose(s["gemm"].median, 0.3) and np.isclose(s["gemm"].max, 0.5)
    assert s["ALL decoder layers"].n == 0
    assert Score.of("x", np.array([])).n == 0


def test_replace_section_is_idempotent(tmp_path):
    p = tmp_path / "README.md"
    p.write_text("# T\n\nintro\n")
    replace_section(p, "table one")
    replace_section(p, "table two")
    text = p.read_text()
    assert text.count(START) == 1 and "table two" in text and "table one" not in text and "intro" in text


@pytest.mark.slow
def test_report_on_committed_records(tmp_path, invoke):
    readme = tmp_path / "README.md"
    res = invoke(main, ["--data", str(DATA), "--readme", str(readme), "--no-plot"])
    assert res.exit_code == 0, res.output
    text = readme.read_text()
    for gpu in ("h100-sxm-80gb", "h200-sxm-141gb"):
        assert f"### {gpu}: fitted on" in text
    assert "Cross-GPU transfer" in text and "ALL decoder layers" in text
    assert START in text and END in text
    # the shipped 80% error band covers 75-85% of held-out split 2 (families no band saw) on each GPU
    for gpu in ("h100-sxm-80gb", "h200-sxm-141gb"):
        section = text.split(f"### {gpu}: coverage of the 80% error band")[1].split("###")[0]
        row = next(line for line in section.splitlines() if line.startswith("| **ALL held-out records**"))
        n, covered = row.split("|")[2:4]
        assert int(n) > 500 and 75.0 <= float(covered.strip().rstrip("%")) <= 85.0, row
        assert (
            "| class: attention_decode |" in section and "| regime: latency |" in section
        )  # per class and regime


def test_report_refuses_records_of_another_gpu(tmp_path, invoke):
    (tmp_path / "h100-sxm-80gb.jsonl").write_text((DATA / "h200-sxm-141gb.jsonl").read_text())
    res = invoke(main, ["--data", str(tmp_path), "--no-plot"])
    assert res.exit_code == 2 and "not 'h100-sxm-80gb'" in res.output
