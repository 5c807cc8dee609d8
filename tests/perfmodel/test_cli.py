"""The perfmodel command: default run, JSON contract, and one clear line per bad input."""

import json

import pytest

from perfmodel.cli import main

JSON_KEYS = {
    "model",
    "gpu",
    "tp",
    "mode",
    "context_len",
    "output_tokens",
    "weight_bytes",
    "kv_bytes_per_token",
    "kv_cache_bytes",
    "prefill_s",
    "decode_s_per_token",
    "decode_s",
    "max_concurrency",
    "context_switch_s",
    "session_throughput_tokens_per_s",
    "bottleneck",
}


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_no_arguments_runs_the_running_example(capsys):
    status, out, err = run(capsys)
    assert status == 0
    assert "yi-34b" in out and "a100-sxm-80gb" in out
    assert "50,000" in out and "4,000" in out
    assert "Traceback" not in err


def test_analyze_json_contract(capsys):
    status, out, _ = run(capsys, "analyze", "--context", "50000", "--json")
    assert status == 0
    d = json.loads(out)
    assert JSON_KEYS <= set(d)
    assert d["model"] == "yi-34b" and d["gpu"] == "a100-sxm-80gb" and d["mode"] == "calibrated"  # the default
    assert d["provenance"]["gemm"] == "transferred from h100-sxm-80gb"
    # the datasheet bound beside the estimate: faster than the estimate, and than its band's low end
    assert d["peak_bound"]["prefill_s"] < d["prefill_s_low"] < d["prefill_s"] < d["prefill_s_high"]
    assert d["peak_bound"]["decode_s_per_token"] < d["decode_s_per_token_low"]
    for k in ("weight_bytes", "kv_bytes_per_token", "kv_cache_bytes", "max_concurrency"):
        assert isinstance(d[k], int)
    assert d["kv_bytes_per_token"] == 245_760
    assert set(d["bottleneck"]) == {"prefill", "decode", "concurrency", "context_switch"}


def test_alias_and_user_files(capsys, tmp_path):
    import yaml

    from perfmodel.hw.loader import GPU_DIR

    data = yaml.safe_load((GPU_DIR / "h100-sxm-80gb.yaml").read_text())
    data["name"] = "my-gpu"
    data["hbm_bytes_per_s"] = 2 * float(data["hbm_bytes_per_s"])
    p = tmp_path / "my-gpu.yaml"
    p.write_text(yaml.safe_dump(data))
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_hidden_layers": 4,
                "num_attention_heads": 8,
                "num_key_value_heads": 2,
                "vocab_size": 32000,
            }
        )
    )
    s1, o1, _ = run(
        capsys,
        "analyze",
        "--gpu",
        "h100",
        "--model",
        str(cfg),
        "--context",
        "4096",
        "--json",
        "--mode",
        "peak",
    )
    s2, o2, _ = run(
        capsys,
        "analyze",
        "--gpu",
        str(p),
        "--model",
        str(cfg),
        "--context",
        "4096",
        "--json",
        "--mode",
        "peak",
    )
    assert s1 == s2 == 0
    assert json.loads(o2)["decode_s_per_token"] < json.loads(o1)["decode_s_per_token"]


@pytest.mark.parametrize(
    "argv, needle, code",
    [
        (["analyze", "--model", "no-such-model"], "known: ", 1),
        (["analyze", "--gpu", "no-such-gpu"], "known: ", 1),
        (["analyze", "--tp", "3"], "does not divide the 56 query heads", 1),
        (["analyze", "--context", "0"], "positive integer", 2),
        (["analyze", "--context", "-4"], "positive integer", 2),
        (["analyze", "--context", "1.5"], "positive integer", 2),
        (["analyze", "--context", "nan"], "positive integer", 2),
        (["analyze", "--batch", "0"], "positive integer", 2),
        (["analyze", "--model", "llama-3.1-405b", "--gpu", "h100"], "tp=", 1),
        (["analyze", "--context", "150000"], "needs", 1),
        (["analyze", "--weight-dtype", "fp7"], "unknown dtype", 1),
    ],
)
def test_bad_input_gives_one_line(capsys, argv, needle, code):
    status, out, err = run(capsys, *argv)
    assert status == code
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_does_not_fit_message_has_bytes_and_suggests_tp(capsys):
    status, _, err = run(capsys, "analyze", "--model", "llama-3.1-405b", "--gpu", "h100")
    assert status == 1
    assert "bytes" in err and "GiB" in err and "tp=16 fits" in err


def test_predict_cli_bad_line(capsys, tmp_path):
    src = tmp_path / "ops.jsonl"
    src.write_text('{"op": "gemm", "m": 4, "n": 4, "k": 4}\n{"op": "attention", "phase": "decode"}\n')
    status, _, err = run(
        capsys, "predict", "--gpu", "h100", "--in", str(src), "--out", str(tmp_path / "p.jsonl")
    )
    assert status == 1
    assert "line 2" in err and "missing" in err


def test_predict_cli_writes(capsys, tmp_path):
    src = tmp_path / "ops.jsonl"
    src.write_text('{"op": "gemm", "m": 4, "n": 4, "k": 4}\n')
    out = tmp_path / "p.jsonl"
    status, _, _ = run(
        capsys, "predict", "--gpu", "h100", "--mode", "peak", "--in", str(src), "--out", str(out)
    )
    assert status == 0
    assert json.loads(out.read_text())["predicted_s"] > 0


def test_sweep_cli_csv(capsys, tmp_path):
    out = tmp_path / "s.csv"
    status, _, _ = run(
        capsys, "sweep", "--context", "1000:5000:1000,50000", "--batch", "1,2", "--out", str(out)
    )
    assert status == 0
    import pandas as pd

    df = pd.read_csv(out)
    assert len(df) == 12 and "fits" in df.columns


def test_lists(capsys):
    assert run(capsys, "gpus")[0] == 0
    status, out, _ = run(capsys, "models")
    assert status == 0 and "yi-34b" in out
