"""NaN, infinity and numbers past the float range are refused where they enter, in one line;
what the CLI prints is strict JSON with finite numbers."""

import json
import math

import pytest
import yaml

from perfmodel.hw import HardwareError, load_gpu
from perfmodel import analyze
from perfmodel.checks import finite_json_loads, is_finite_number
from perfmodel.errors import NonFiniteError, OpDescriptorError
from perfmodel.ops import op_from_dict

HUGE = "1" + "0" * 400


def strict(text: str):
    """JSON as a strict parser reads it: NaN / Infinity fail."""

    def refuse(c):
        raise AssertionError(f"non-finite {c} in the output")

    return json.loads(text, parse_constant=refuse)


def one_line_error(p, rc=1, what=""):
    assert p.returncode == rc, (p.returncode, p.stdout[-500:], p.stderr[-2000:])
    assert (
        "Traceback" not in p.stderr and p.stderr.count("\n") == 1 and p.stderr.startswith("perfmodel: error:")
    )
    assert what in p.stderr


def test_is_finite_number():
    assert is_finite_number(3) and is_finite_number(2.5e12)
    assert not any(is_finite_number(v) for v in (float("nan"), float("inf"), int(HUGE), True, "3", None))
    with pytest.raises(json.JSONDecodeError, match="not a finite number"):
        finite_json_loads('{"flops": NaN}')
    with pytest.raises(json.JSONDecodeError, match="larger than"):
        finite_json_loads('{"m": %s}' % HUGE)
    with pytest.raises(json.JSONDecodeError):
        finite_json_loads('{"m": 1e400}')
    assert finite_json_loads('{"m": 12, "x": 1.5}') == {"m": 12, "x": 1.5}


def test_op_descriptor_refuses_nan_and_huge_numbers():
    with pytest.raises(OpDescriptorError, match="flops"):
        op_from_dict({"op": "elementwise", "bytes": 1000, "flops": float("nan")})
    with pytest.raises(OpDescriptorError, match="'m'"):
        op_from_dict({"op": "gemm", "m": int(HUGE), "n": 1, "k": 1})


def test_predict_file_with_nan_is_one_line(tmp_path, perfmodel_cli):
    src = tmp_path / "ops.jsonl"
    src.write_text('{"op": "elementwise", "bytes": 1000, "flops": NaN}\n')
    p = perfmodel_cli("predict", "--gpu", "h100", "--in", src, "--out", tmp_path / "out.jsonl")
    one_line_error(p, what="line 1")
    assert not (tmp_path / "out.jsonl").exists()


def test_gpu_file_with_zero_pcie_is_refused_at_load(tmp_path, perfmodel_cli):
    from perfmodel.hw.loader import GPU_DIR

    data = yaml.safe_load((GPU_DIR / "a100-sxm-80gb.yaml").read_text())
    data["pcie_bytes_per_s_per_direction"] = 0
    path = tmp_path / "nopcie.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(HardwareError, match="pcie_bytes_per_s_per_direction"):
        load_gpu(str(path))
    one_line_error(perfmodel_cli("analyze", "--gpu", path, "--json"), what="pcie_bytes_per_s_per_direction")


def test_huge_integers_in_flags_and_api(perfmodel_cli):
    one_line_error(perfmodel_cli("analyze", "--context", HUGE), rc=2, what="--context")
    one_line_error(perfmodel_cli("sweep", "--batch", HUGE), rc=2, what="--batch")
    with pytest.raises(NonFiniteError, match="context_len"):
        analyze(context_len=int(HUGE))
    with pytest.raises(NonFiniteError, match="batch"):
        analyze(batch=float("inf"))


def test_plan_capacity_refuses_an_infinite_rate(perfmodel_cli):
    one_line_error(
        perfmodel_cli("plan", "capacity", "--model", "llama-3-8b", "--rate", "inf", "--json"), what="--rate"
    )


def test_sweep_absurd_batch_is_refused_not_negative(perfmodel_cli):
    p = perfmodel_cli("sweep", "--batch", "1000000000000")
    one_line_error(p, what="batch 1,000,000,000,000")
    assert "-9223372036854775808" not in p.stdout


def test_simulate_one_output_token_json_is_finite(perfmodel_cli):
    p = perfmodel_cli("simulate", "--output-len", "1", "--requests", "40", "--json")
    assert p.returncode == 0, p.stderr
    d = strict(p.stdout)
    assert d["tpot_s"] == {"p50": None, "p90": None, "p99": None, "mean": None}  # no second token to time
    assert math.isfinite(d["ttft_s"]["p50"])
