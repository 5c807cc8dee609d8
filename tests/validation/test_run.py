"""The measuring code on a CPU: every builder runs on the smoke shapes; records are well formed."""

import json

import pytest

torch = pytest.importorskip("torch")

from perfmodel.validation import bench  # noqa: E402
from perfmodel.validation.cases import cases  # noqa: E402
from perfmodel.validation.layer import DecoderLayerBench, rmsnorm, silu_mul  # noqa: E402
from perfmodel.validation.records import check_record  # noqa: E402


@pytest.mark.parametrize("section", ["gemm", "elementwise", "memcpy", "layer"])
def test_builders_run_on_cpu(section):
    for case in cases("smoke", (section,)):
        built = bench.build(case, torch.device("cpu"), l2_bytes=1e5)
        t, reps, method = bench.time_cpu(built.fns, max_time_s=0.0)
        assert t > 0 and method == "host_clock"


def test_rotation_defeats_the_cache():
    assert bench.rotations(1e9, 50e6) == 1
    assert bench.rotations(10e6, 50e6) == 15
    assert bench.rotations(1e3, 50e6) == 16


def test_rotation_over_a_byte_floor():
    # a floor of bytes per pass (cold address translation, as a model step streams its weights)
    assert bench.rotations(283e6, 60e6, min_bytes=8e9) == 29
    assert bench.rotations(10e6, 50e6, min_bytes=1e9) == 100
    assert bench.rotations(1e3, 50e6, min_bytes=1e9) == 512  # capped
    assert bench.rotations(10e6, 50e6, min_bytes=1e6) == 15  # the L2 rule when it asks for more


def test_layer_matches_a_plain_reference():
    torch.manual_seed(0)
    lay = DecoderLayerBench(2, 1, 9, 32, 64, 4, 2, 8, torch.device("cpu"), dtype=torch.float32)
    out = lay()
    x = lay.x
    h = rmsnorm(x, lay.n1) @ lay.w_qkv
    q, k, v = h.view(2, 1, 8, 8).split([4, 2, 2], dim=2)
    kc, vc = lay.k_cache, lay.v_cache  # the layer already appended k, v at position 8
    assert torch.equal(kc[:, :, 8], k[:, 0])
    kk, vv = kc.repeat_interleave(2, dim=1), vc.repeat_interleave(2, dim=1)
    att = torch.softmax(q.transpose(1, 2) @ kk.transpose(-1, -2) / 8**0.5, -1) @ vv
    h1 = x + att.transpose(1, 2).reshape(2, 32) @ lay.w_o
    ref = h1 + silu_mul(rmsnorm(h1, lay.n2) @ lay.w_gu) @ lay.w_down
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_dry_run_records_are_valid_and_marked(tmp_path, monkeypatch, invoke):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # what --dry-run sets; restored after the test

    from perfmodel.validation.run import main

    res = invoke(main, ["--out", str(tmp_path), "--dry-run", "--sections", "gemm,memcpy", "--name", "dry"])
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (tmp_path / "dry.jsonl").read_text().splitlines()]
    assert len(recs) == len(cases("smoke", ("gemm", "memcpy")))
    for r in recs:
        check_record(r, "dry")
        assert r["dry_run"] is True and r["gpu_model"] is None
    bad = invoke(main, ["--out", str(tmp_path), "--dry-run", "--sections", "warp"])
    assert bad.exit_code == 2 and "unknown section" in bad.output
    bad = invoke(main, ["--out", str(tmp_path), "--dry-run", "--rotate-bytes", "-1"])
    assert bad.exit_code == 2 and "--rotate-bytes" in bad.output


def test_rotated_records_say_so(tmp_path, monkeypatch, invoke):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from perfmodel.validation.run import main

    argv = [
        "--out",
        str(tmp_path),
        "--dry-run",
        "--sections",
        "gemm",
        "--name",
        "cold",
        "--rotate-bytes",
        "1e6",
    ]
    res = invoke(main, argv)
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (tmp_path / "cold.jsonl").read_text().splitlines()]
    for r in recs:
        check_record(r, "cold")
        size = (r["m"] * r["k"] + r["k"] * r["n"]) * 2
        assert r["rotate_bytes"] == 1e6 and r["rotate"] * size >= min(1e6, 512 * size)


def test_noncausal_set_is_block_pairs_of_ring_steps():
    from perfmodel.validation.cases import NONCAUSAL_BLOCKS, noncausal_cases

    full = noncausal_cases("quick")
    assert {(c.desc["q_heads"], c.desc["kv_heads"], c.desc["head_dim"]) for c in full} == {
        (32, 8, 128),
        (32, 32, 128),
    }
    assert sorted({c.desc["q_len"] for c in full}) == list(NONCAUSAL_BLOCKS)
    for c in full:
        assert c.desc["causal"] is False and c.desc["phase"] == "prefill"
        assert c.desc["q_len"] == c.desc["kv_len"] and c.desc["batch"] == 1
        assert c.family.startswith("attention_prefill_noncausal/")
    assert {c.impl for c in full} == {"sdpa", "flash2", "triton"} and len(full) == 2 * 3 * len(
        NONCAUSAL_BLOCKS
    )
    assert [c.impl for c in full].index("triton") == 2 * len(full) // 3  # Triton (autotuned) last


def test_attention_builders_honour_the_causal_flag():
    from perfmodel.validation.cases import attention_cases, noncausal_cases

    for case, want in (
        (noncausal_cases("smoke")[0], False),
        (noncausal_cases("smoke")[-1], False),
        (attention_cases("smoke")[0], True),
    ):
        built = bench.build(case, torch.device("cpu"), l2_bytes=1e5)
        assert built.fns[0].__defaults__[-1] is want, case


def test_noncausal_cli_refuses_two_case_sets(tmp_path, invoke):
    from perfmodel.validation.run import main

    bad = invoke(main, ["--out", str(tmp_path), "--dry-run", "--extra", "--noncausal"])
    assert bad.exit_code == 2 and "pick one" in bad.output


def test_device_script_parses():
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "validation" / "device_h200x4.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_impls_filter_measures_only_the_named_implementations(tmp_path, monkeypatch, invoke):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from perfmodel.validation.run import main

    res = invoke(
        main,
        [
            "--out",
            str(tmp_path),
            "--dry-run",
            "--sections",
            "attention",
            "--impls",
            "stream_k",
            "--name",
            "sk",
        ],
    )
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (tmp_path / "sk.jsonl").read_text().splitlines()]
    want = [c for c in cases("smoke", ("attention",)) if c.impl == "stream_k"]
    assert recs and len(recs) == len(want) and {r["impl"] for r in recs} == {"stream_k"}
    bad = invoke(main, ["--out", str(tmp_path), "--dry-run", "--impls", "warp_drive"])
    assert bad.exit_code == 2 and "unknown implementation" in bad.output


def test_gemm_ms_replaces_the_m_values_of_every_gemm_family(tmp_path, monkeypatch, invoke):
    from perfmodel.validation.cases import with_gemm_ms

    base = cases("smoke", ("gemm", "memcpy"))
    out = with_gemm_ms(base, [3, 128, 3])
    gemms = [c for c in out if c.section == "gemm"]
    fams = {(c.args["n"], c.args["k"]) for c in base if c.section == "gemm"}
    assert {(c.args["n"], c.args["k"]) for c in gemms} == fams
    assert sorted(c.args["m"] for c in gemms) == sorted([3, 128] * len(fams))
    assert all(c.desc["m"] == c.args["m"] for c in gemms)
    assert [c for c in out if c.section != "gemm"] == [c for c in base if c.section != "gemm"]
    with pytest.raises(ValueError, match="positive"):
        with_gemm_ms(base, [0, 4])

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from perfmodel.validation.run import main

    res = invoke(
        main,
        [
            "--out",
            str(tmp_path),
            "--dry-run",
            "--sections",
            "gemm",
            "--gemm-ms",
            "2,9",
            "--kernel-names",
            "--name",
            "g",
        ],
    )
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert sorted(r["m"] for r in recs) == sorted([2, 9] * len(fams))
    assert all(r["kernels"] == [] for r in recs)  # no CUDA kernels on a CPU
    bad = invoke(main, ["--out", str(tmp_path), "--dry-run", "--sections", "gemm", "--gemm-ms", "0"])
    assert bad.exit_code == 2 and "--gemm-ms" in bad.output


def test_every_timed_region_starts_behind_the_lead_kernel(monkeypatch):
    # replay_s and the eager event timing queue the busy-wait before each start event, so the
    # clock does not count the host's launch of the region
    log = []

    class FakeEvent:
        def __init__(self, enable_timing=True):
            self.t = None

        def record(self):
            log.append("record")
            self.t = len(log)

        def synchronize(self):
            pass

        def elapsed_time(self, other):
            return 1.0

    class FakeGraph:
        def replay(self):
            log.append("replay")

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "_sleep", lambda cycles: log.append(("sleep", cycles)), raising=False)
    times = bench.replay_s(FakeGraph(), calls=4, trials=3)
    assert times == [1e-3 / 4] * 3
    assert log == [("sleep", bench.LEAD_CYCLES), "record", "replay", "record"] * 3
    log.clear()
    bench._events_time([lambda: log.append("call")], reps=2)
    assert log == [("sleep", bench.LEAD_CYCLES), "record", "call", "call", "record"]
