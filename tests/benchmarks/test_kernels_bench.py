"""The GPU benchmark's command-line parsing (the timing itself needs a GPU and is not run here)."""

import pytest


def test_variant_parses_settings(bench):
    label, flags = bench._parse_variant("one:programs_per_sm=1,fused_merge=False,wide_offsets=True")
    assert label == "one"
    assert flags == {"programs_per_sm": 1, "fused_merge": False, "wide_offsets": True}
    assert type(flags["programs_per_sm"]) is int


@pytest.mark.parametrize(
    "text",
    [
        "no-colon",
        ":phantom_tiles=0",
        "x:",
        "x:phantom_tiles",
        "x:not_a_setting=1",
        "x:DecodeSchedule=1",
        "x:phantom_tiles=two",
    ],
)
def test_variant_rejects_bad_text(bench, text):
    with pytest.raises(ValueError):
        bench._parse_variant(text)


@pytest.mark.parametrize("flag,value", [("--variant", "x:not_a_setting=1"), ("--layout", "16:5:64")])
def test_main_reports_a_bad_option_in_one_line(bench, capsys, monkeypatch, flag, value):
    monkeypatch.setattr("sys.argv", ["kernels.py", flag, value])
    assert bench.main() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {flag}:")


def test_shapes_pick_from_the_grid_in_grid_order(bench):
    grid = [(1, 1024, False), (2, 16384, False), (2, 16384, True), (8, 4096, True)]
    assert bench._parse_shapes("8:4096:r,1:1024", grid) == [(1, 1024, False), (8, 4096, True)]
    assert bench._parse_shapes("2:16384", grid) == [(2, 16384, False)]


@pytest.mark.parametrize("text", ["1", "1:1024:x", "1:1024:r:r", "a:1024", "1:-5", "3:3"])
def test_shapes_reject_bad_text_or_shapes_off_the_grid(bench, text):
    with pytest.raises(ValueError):
        bench._parse_shapes(text, [(1, 1024, False)])


def test_layout_parses_heads_and_head_dim(bench):
    assert bench._parse_layout("16:4:64") == (16, 4, 64)
    assert bench._parse_layout("32:8:128") == (32, 8, 128)


@pytest.mark.parametrize("text", ["16:4", "16:4:64:1", "a:4:64", "16:0:64", "16:5:64", "16:4:96", "-16:4:64"])
def test_layout_rejects_bad_text(bench, text):
    with pytest.raises(ValueError):
        bench._parse_layout(text)


@pytest.mark.parametrize(
    "variant,ceilings,key",
    [
        (
            "fp8 e4m3",
            {"gemm_bf16_flops_per_s": 800e12, "gemm_fp8_flops_per_s": 1600e12},
            "gemm_fp8_flops_per_s",
        ),
        ("bf16", {"gemm_bf16_flops_per_s": 800e12, "gemm_fp8_flops_per_s": 1600e12}, "gemm_bf16_flops_per_s"),
        ("fp8 e4m3", {"gemm_bf16_flops_per_s": 800e12}, "gemm_bf16_flops_per_s"),  # no fp8 ceiling measured
    ],
)
def test_gemm_rows_take_the_ceiling_of_their_dtype(bench, monkeypatch, capsys, variant, ceilings, key):
    monkeypatch.setattr(bench, "INFO", {"ceilings": ceilings})
    monkeypatch.setattr(bench, "ROWS", [])
    r = bench._row("gemm", "matmul", variant, "8192x8192x8192", 1e-3, flops=400e9)
    assert r["flops_ceiling"] == key
    assert r["frac_of_flops_ceiling"] == pytest.approx(400e12 / ceilings[key])


def test_breadth_rows_say_how_they_were_timed(bench, monkeypatch):
    """A breadth row records graph replays, or the eager fallback where a call could not be captured."""
    monkeypatch.setattr(bench, "_bench_graph", lambda fns: 1e-3)
    bench._REPLAY_TIMINGS.clear()
    t = bench._bench_replay(lambda: None)
    row = bench._breadth_row("heads_decode", "k", "v", "c", t, baseline="b", baseline_s=2e-3)
    assert row["timing"] == "cuda graph" and row["speed_vs_baseline"] == 2.0

    def no_capture(fns):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(bench, "_bench_graph", no_capture)
    monkeypatch.setattr(bench, "_bench", lambda fn: 3e-3)
    monkeypatch.setattr(bench.torch.cuda, "synchronize", lambda: None)
    bench._bench_replay(lambda: None)
    monkeypatch.setattr(bench, "_bench_graph", lambda fns: 1e-3)
    bench._bench_replay(lambda: None)
    row = bench._breadth_row("mla", "k", "v", "c", 1e-3)
    assert row["timing"] == "cuda graph + do_bench (not capturable)"
    assert bench._breadth_row("mla", "k", "v", "c", 1e-3)["timing"] == "cuda graph"  # cleared per row
