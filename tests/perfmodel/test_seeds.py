"""docs/seeds.md: every seed paper's row is recomputed from its commands and checked against the table."""

import json
import math

import pytest

from perfmodel import seeds
from perfmodel.errors import InvalidInputError


def test_every_row_recomputes_to_the_table():
    """Runs each row's perfmodel commands (in process, as the shell would) and compares the metric with
    the number docs/seeds.json stores and docs/seeds.md shows; the table is the rendering of the file."""
    rows = seeds.load_rows()
    systems = [r["system"] for r in rows]
    for name in (
        "LeanAttention",
        "Ring Attention",
        "TokenRing",
        "DeepSpeed-Ulysses",
        "FlexSP",
        "MoETuner",
        "ExFlow",
        "Lamina",
        "Hydragen",
        "Layer-Condensed KV",
        "GQA / MLA",
        "LazyLLM",
        "XAttention",
        "Mamba",
        "ByteTransformer",
        "KV Prediction",
        "APE",
        "Blockwise Parallel Transformer",
        "DeepSpeed-Inference",
        "Long-context",
    ):
        assert any(name in s for s in systems), name
    failures = []
    for r in rows:
        value = seeds.run_row(r)
        assert r["verdict"] in ("reproduced", "differs") and r["commands"], r["system"]
        if not math.isclose(value, r["model"], rel_tol=1e-6):
            failures.append(f"{r['system']}: model gives {value!r}, table says {r['model']!r}")
    assert not failures, "; ".join(failures) + " (python -m perfmodel.seeds --update)"
    assert seeds.render_table(rows) in seeds.SEEDS_MD.read_text(), (
        "docs/seeds.md is stale: python -m perfmodel.seeds --write"
    )


def test_metric_language_and_placeholders(tmp_path):
    out = {"a": {"x": 2.0, "l": [{"y": 3}]}, "b": {"x": 4.0}}
    assert seeds.evaluate("100 * (1 - a.x / b.x)", out) == 50.0
    assert seeds.evaluate("a.l[0].y * -1", out) == -3.0
    with pytest.raises(InvalidInputError, match="not allowed"):
        seeds.evaluate("__import__('os')", out)
    with pytest.raises(InvalidInputError, match="no such field"):
        seeds.evaluate("a.missing", out)
    with pytest.raises(InvalidInputError, match="not a perfmodel command"):
        seeds.run_command("ls -l")
    d = seeds.run_command(
        "perfmodel analyze --mode peak --context 4000 --batch {a.n} --json", outputs={"a": {"n": 3}}
    )
    assert d["batch"] == 3
    with pytest.raises(InvalidInputError, match="exited 1"):
        seeds.run_command("perfmodel analyze --model no-such-model --json")


def test_verdicts_are_checked(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"rows": [{"system": "x", "verdict": "maybe", "commands": {}, "metric": None}]}))
    with pytest.raises(InvalidInputError, match="verdict"):
        seeds.load_rows(p)
    p.write_text(
        json.dumps(
            {
                "rows": [
                    {"system": "x", "verdict": "differs", "commands": {"a": "perfmodel gpus"}, "metric": None}
                ]
            }
        )
    )
    with pytest.raises(InvalidInputError, match="commands and a metric"):
        seeds.load_rows(p)
    p.write_text(
        json.dumps(
            {"rows": [{"system": "x", "verdict": "not expressible yet", "commands": {}, "metric": None}]}
        )
    )
    with pytest.raises(InvalidInputError, match="verdict"):
        seeds.load_rows(p)


def test_fmt_value():
    assert seeds.fmt_value(9.8347, "s") == "9.83 s"
    assert seeds.fmt_value(93.3388, "%") == "93.3%"
    assert seeds.fmt_value(1.0, "x") == "1.00x"
    assert seeds.fmt_value(None) == "n/a"
