"""``perfmodel simulate``: JSON contract, outputs, one-line errors."""

import json

import pandas as pd
import pytest

from perfmodel.cli import main


def run(capsys, *argv):
    code = main(["simulate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_contract(capsys):
    code, out, err = run(
        capsys,
        "--model",
        "llama-3-8b",
        "--gpu",
        "h100",
        "--requests",
        "200",
        "--arrival-rate",
        "20",
        "--prompt-len",
        "1024",
        "--output-len",
        "64",
        "--seed",
        "1",
        "--json",
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["completed"] == 200
    for k in ("ttft_s", "tpot_s", "e2e_s"):
        assert set(d[k]) >= {"p50", "p90", "p99"}
        assert d[k]["p50"] <= d[k]["p90"] <= d[k]["p99"]
    for k in (
        "throughput_tokens_per_s",
        "peak_concurrency",
        "swap_out_bytes",
        "swap_in_bytes",
        "preemptions",
    ):
        assert k in d
    assert d["throughput_tokens_per_s"] <= d["analytic"]["throughput_bound_tokens_per_s"]
    assert err == ""
    # calibrated by default, with the provenance of every op class
    assert d["mode"] == "calibrated" and d["provenance"]["gemm"] == "measured"
    assert d["provenance"]["all_reduce"] == "transferred from h200-sxm-141gb"


def test_outputs_and_trace_file(capsys, tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_len,output_len\n0,500,10\n0.01,800,20\n0.5,3000,5\n")
    req, tl, pf = tmp_path / "r.csv", tmp_path / "tl.parquet", tmp_path / "p.json"
    code, out, err = run(
        capsys,
        "--trace",
        str(trace),
        "--out-requests",
        str(req),
        "--out-timeline",
        str(tl),
        "--perfetto",
        str(pf),
        "--slo-ttft",
        "0.5",
        "--slo-tpot",
        "0.05",
    )
    assert code == 0, err
    assert "TTFT" in out and "goodput" in out
    df = pd.read_csv(req)
    assert len(df) == 3 and (df["e2e_s"] >= df["ttft_s"]).all()
    t = pd.read_parquet(tl)
    assert len(t) > 0 and (t["kv_bytes_per_gpu"] >= 0).all()
    ev = json.loads(pf.read_text())["traceEvents"]
    xs = [e for e in ev if e["ph"] == "X"]
    assert len(xs) == len(t)
    assert all(e["dur"] > 0 for e in xs)
    assert sum(e["args"]["prefill_tokens"] for e in xs) == 500 + 800 + 3000


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--arrival-rate", "0"], "arrival rate"),
        (["--arrival-rate", "-2"], "arrival rate"),
        (["--prompt-len", "0"], "integer >= 1"),
        (["--output-len", "uniform:5:1"], "low <= high"),
        (
            ["--model", "yi-34b", "--gpu", "a100-sxm-80gb", "--prompt-len", "150000", "--output-len", "5"],
            "GiB of KV",
        ),
        (["--model", "llama-3-70b", "--gpu", "a100-sxm-80gb"], "raise tp or pp"),
        (["--tp", "3"], "does not divide"),
        (["--host-kv-gib", "-1"], "host-kv-gib"),
    ],
)
def test_bad_input_is_one_line(capsys, argv, msg):
    code, _out, err = run(capsys, "--requests", "5", *argv)
    assert code == 1
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_usage_exits_2(capsys):
    assert main(["simulate", "--kv-policy", "evict"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_malformed_trace_line(capsys, tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"arrival_s": 0, "prompt_len": 10, "output_len": 2}\n{"arrival_s": 1, "prompt_len": "x"}\n')
    code, _out, err = run(capsys, "--trace", str(p))
    assert code == 1 and f"{p}:2:" in err


def test_knob_flags_reach_the_simulation(capsys):
    argv = [
        "--requests",
        "300",
        "--arrival-rate",
        "inf",
        "--prompt-len",
        "4000",
        "--output-len",
        "64",
        "--kv-policy",
        "queue",
        "--json",
    ]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    base = json.loads(out)
    assert base["knobs"] == {} and base["notes"] == []
    code, out, err = run(capsys, *argv, "--kv-dtype", "fp8", "--kv-keep-ratio", "0.5")
    assert code == 0, err
    d = json.loads(out)
    assert d["knobs"] == {"kv_dtype": "fp8", "kv_keep_ratio": 0.5}
    assert len(d["notes"]) == 1 and "cost, not quality" in d["notes"][0]
    assert "kv_dtype=fp8" in d["deployment"]
    # a quarter of the KV per request: memory no longer binds at 300 requests
    assert base["peak_concurrency"] < 150 and d["peak_concurrency"] == 300
    assert d["analytic"]["max_concurrency"] >= 4 * base["analytic"]["max_concurrency"] - 4


def test_knob_note_in_the_table(capsys):
    code, out, err = run(capsys, "--requests", "5", "--kv-dtype", "fp8")
    assert code == 0, err
    assert "knobs: kv_dtype=fp8" in out and "cost, not quality" in out


@pytest.mark.parametrize(
    "argv,code,msg",
    [
        (["--kv-keep-ratio", "1.5"], 1, "kv_keep_ratio must be in (0, 1]"),
        (["--kv-keep-ratio", "x"], 2, "--kv-keep-ratio"),
        (["--kv-dtype", "fp9"], 1, "unknown dtype"),
        (["--kv-heads", "3"], 1, "must divide"),
        (["--sliding-window", "5000"], 1, "longer than the context"),
        (["--kv-tier", "nvme"], 2, "give capacity and bandwidth"),
        (["--shared-prefix-tokens", "2048"], 1, "must be shorter than the context"),
        (["--kv-tier", "ddr", "--pp", "2"], 1, "need pp=1"),
        (["--offload-attention", "h200", "--kv-tier", "ddr"], 1, "cannot be combined"),
    ],
)
def test_bad_knob_is_one_line(capsys, argv, code, msg):
    got, _out, err = run(capsys, "--requests", "5", *argv)
    assert got == code
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


def test_prefix_tier_and_offload_flags_are_priced(capsys):
    for argv, key in (
        (["--shared-prefix-tokens", "1000"], "shared_prefix_tokens"),
        (["--kv-tier", "ddr"], "kv_tiers"),
        (["--offload-attention", "h200:2"], "offload"),
    ):
        code, out, err = run(
            capsys, "--requests", "20", "--prompt-len", "3000", "--output-len", "16", "--json", *argv
        )
        assert code == 0, err
        d = json.loads(out)
        assert key in d["knobs"] and d["completed"] == 20
        assert d["peak_concurrency"] <= d["analytic"]["max_concurrency"]
