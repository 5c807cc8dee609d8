"""Engine-style workloads (closed loop, random lengths, traces without arrivals), engine files, the
engine-style metrics, and the published-results table of docs/serving.md."""

import re
from pathlib import Path

import numpy as np
import pytest

from perfmodel.errors import InvalidInputError
from perfmodel.serving import Deployment, LengthDist, Requests, read_trace, simulate
from perfmodel.serving.engine import Engine, engine_names, load_engine
from perfmodel.serving.published import (
    compare,
    load_runs,
    markdown_table,
    summary_line,
    without_custom_all_reduce_line,
    without_front_end_line,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def test_random_lengths_follow_the_range_ratio():
    d = LengthDist.parse("random:1000:0.25")
    lo, hi = d.bounds
    assert (lo, hi) == (750, 1250)
    x = d.sample(5000, np.random.default_rng(0))
    assert x.min() >= lo and x.max() <= hi and abs(x.mean() - 1000) < 10
    assert (LengthDist.parse("random:64:0").sample(3, np.random.default_rng(0)) == 64).all()
    with pytest.raises(InvalidInputError, match="range ratio"):
        LengthDist.parse("random:64:1.5")


def test_trace_without_arrival_times_arrives_at_zero(tmp_path):
    (tmp_path / "t.jsonl").write_text(
        '{"prompt_len": 10, "output_len": 2}\n{"prompt_len": 5, "output_len": 3}\n'
    )
    (tmp_path / "t.csv").write_text("prompt_len,output_len\n10,2\n5,3\n")
    for name in ("t.jsonl", "t.csv"):
        r = read_trace(tmp_path / name)
        assert list(r.arrival_s) == [0.0, 0.0] and list(r.prompt_len) == [10, 5]


def test_closed_loop_keeps_at_most_c_in_flight():
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", mode="peak")
    reqs = Requests.of(np.zeros(12), [500] * 12, [20] * 12)
    one = simulate(dep, reqs, max_concurrency=1)
    # one at a time: each is sent when the previous finishes, and each runs alone
    assert np.allclose(one.arrival_s[1:], one.finish_s[:-1])
    assert np.allclose(one.ttft_s, one.ttft_s[0]) and one.peak_concurrency == 1
    four = simulate(dep, reqs, max_concurrency=4)
    assert four.peak_concurrency == 4
    events = sorted(
        [(t, 1) for t in four.arrival_s] + [(t, -1) for t in four.finish_s], key=lambda e: (e[0], e[1])
    )
    assert max(np.cumsum([e[1] for e in events])) <= 4
    assert four.engine_metrics()["output_throughput"] > 3 * one.engine_metrics()["output_throughput"]
    with pytest.raises(InvalidInputError, match="max_concurrency"):
        simulate(dep, reqs, max_concurrency=0)


def test_engine_metrics_names_and_values():
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb")
    res = simulate(dep, Requests.of(np.zeros(8), [1000] * 8, [50] * 8))
    m = res.summary()
    for stat in ("mean", "median", "p90", "p99"):
        for what in ("ttft", "tpot", "itl", "e2el"):
            assert m[f"{stat}_{what}_ms"] is not None
    assert m["mean_ttft_ms"] == pytest.approx(1e3 * res.ttft_s.mean())
    assert m["mean_e2el_ms"] == pytest.approx(1e3 * res.e2e_s.mean())
    # one batch decoding together: every token waits one decode step; ITL is TPOT
    assert m["mean_itl_ms"] == pytest.approx(m["mean_tpot_ms"], rel=1e-3)
    assert m["output_throughput"] == pytest.approx(400 / res.makespan_s)
    assert m["total_token_throughput"] == pytest.approx(8400 / res.makespan_s)
    assert m["ttft_s"]["p50"] is not None  # the old keys stay


def test_engine_files_have_a_source_for_every_figure():
    assert {"vllm", "sglang", "vllm-0.5", "vllm-0.6-multistep"} <= set(engine_names())
    for name in engine_names():
        e = load_engine(name)
        kinds = e.source_kinds()
        assert set(kinds.values()) <= {"measured", "published", "assumed"}
        assert {"step_overhead_s", "max_num_batched_tokens", "chunked_prefill", "cuda_graphs"} <= set(kinds)
    assert load_engine("none") is None
    with pytest.raises(InvalidInputError, match="unknown engine"):
        load_engine("tgi-9")


def test_engine_step_overheads():
    e = Engine("x", step_overhead_s=1e-3, eager_launch_s_per_layer=1e-4, cuda_graph_max_batch=8)
    assert e.step_s(5e-3, 4, 0, 0, 32) == pytest.approx(6e-3)  # graphed decode: gpu + host
    assert e.step_s(1e-3, 16, 0, 0, 32) == pytest.approx(3.2e-3 + 1e-3)  # eager: launch floor, then host
    ov = Engine("y", step_overhead_s=1e-3, overlap_host=True)
    assert ov.step_s(5e-3, 4, 0, 0, 32) == pytest.approx(5e-3) and ov.step_s(5e-4, 4, 0, 0, 32) == 1e-3


def test_engine_overhead_adds_to_each_decode_step():
    reqs = Requests.of([0.0], [512], [65])
    base = simulate(Deployment.make("llama-3-8b", "h100-sxm-80gb"), reqs)
    old = simulate(Deployment.make("llama-3-8b", "h100-sxm-80gb", engine="vllm-0.5"), reqs)
    assert old.tpot_s[0] == pytest.approx(base.tpot_s[0] + 4e-3, rel=1e-6)
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", engine="sglang")
    assert dep.token_budget == 8192 and dep.reserve_fraction == pytest.approx(0.17)


def test_prefill_first_stalls_the_decoders():
    from dataclasses import replace

    reqs = Requests.of([0.0, 0.05], [200, 8000], [200, 2])
    sg = load_engine("sglang")
    first = simulate(Deployment.make("llama-3-8b", "h100-sxm-80gb", engine=sg, token_budget=2048), reqs)
    mixed = simulate(
        Deployment.make(
            "llama-3-8b", "h100-sxm-80gb", engine=replace(sg, chunked_prefill="mixed"), token_budget=2048
        ),
        reqs,
    )
    # the long prompt's chunks run alone under prefill-first: the first request waits them all out (its
    # worst inter-token gap holds the whole prefill); mixed, it decodes beside each chunk
    assert first.itl_s[0].max() > 2 * mixed.itl_s[0].max()
    assert first.ttft_s[1] <= mixed.ttft_s[1] * 1.001


def test_published_table_in_the_doc_is_current():
    """docs/serving.md's table is compare()'s output: rerun the simulator on the published runs."""
    rows = compare()
    runs = load_runs()
    assert len({r["gpu"] for r in runs}) >= 2 and len({r["model"] for r in runs}) >= 2
    for run in runs:
        assert run["url"].startswith("https://") and len(run["input_lens"]) == len(run["output_lens"])
    doc = DOC.read_text()
    assert len(runs) >= 10 and len(rows) == sum(len(r["published"]) for r in runs)
    assert markdown_table(rows) in doc, "regenerate the table: python -m perfmodel.serving.published"
    assert (
        summary_line(rows) in doc
        and without_front_end_line() in doc
        and without_custom_all_reduce_line() in doc
    )
    m = re.search(
        r"median \|error\| on measured profiles: TTFT (\d+) %, TPOT (\d+) %, output throughput (\d+) %",
        DOC.read_text(),
    )
    assert m is not None
    for metric, doc_value in zip(("mean_ttft_ms", "median_tpot_ms", "output_throughput"), m.groups()):
        errs = [abs(r["error"]) for r in rows if r["metric"] == metric and r["measured_profile"]]
        assert round(100 * float(np.median(errs))) == int(doc_value)


def test_cli_engine_style_flags(capsys):
    import json

    from perfmodel.cli import main

    assert (
        main(
            [
                "simulate",
                "--requests",
                "20",
                "--request-rate",
                "inf",
                "--max-concurrency",
                "4",
                "--prompt-len",
                "random:500:0.5",
                "--output-len",
                "32",
                "--engine",
                "sglang",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["engine"] == "sglang" and out["max_concurrency"] == 4 and out["peak_concurrency"] <= 4
    assert out["median_tpot_ms"] > 0 and out["output_throughput"] > 0 and "ttft_s" in out
    assert main(["simulate", "--engine", "nope"]) == 1
    assert "unknown engine" in capsys.readouterr().err


def test_front_end_cost_reaches_ttft_and_e2e():
    from dataclasses import replace

    reqs = Requests.of([0.0], [512], [33])
    eng = Engine("x", step_overhead_s=1e-3)
    base = simulate(Deployment.make("llama-3-8b", "h100-sxm-80gb", engine=eng), reqs)
    fe = simulate(Deployment.make("llama-3-8b", "h100-sxm-80gb", engine=replace(eng, frontend_s=5e-3)), reqs)
    # one request: the front end delays it by its cost, and the GPU work is unchanged
    assert fe.ttft_s[0] == pytest.approx(base.ttft_s[0] + 5e-3, rel=1e-9)
    assert fe.e2e_s[0] == pytest.approx(base.e2e_s[0] + 5e-3, rel=1e-9)
    assert fe.tpot_s[0] == pytest.approx(base.tpot_s[0], rel=1e-9)
    with pytest.raises(InvalidInputError, match="frontend_s"):
        Engine("bad", frontend_s=-1e-3)


def test_front_end_serves_a_burst_one_request_at_a_time():
    from dataclasses import replace

    n, f = 8, 4e-3
    reqs = Requests.of(np.zeros(n), [64] * n, [4] * n)
    eng = Engine("x", frontend_s=f)
    apart = simulate(Deployment.make("llama-3-8b", "h100-sxm-80gb", engine=eng), reqs)
    held = simulate(
        Deployment.make("llama-3-8b", "h100-sxm-80gb", engine=replace(eng, frontend_blocks_engine=True)), reqs
    )
    # request k reaches the scheduler after k + 1 front-end slots, so none has its first token earlier
    assert (apart.first_token_s >= f * np.arange(1, n + 1) - 1e-12).all()
    assert apart.ttft_s[0] < n * f  # the first starts while the front end handles the rest
    # a front end in the engine's loop holds every step until the whole burst is in: all wait n slots
    assert (held.ttft_s > n * f).all() and held.ttft_s.mean() > apart.ttft_s.mean()
