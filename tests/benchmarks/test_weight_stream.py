import pytest

from perfmodel.validation.e2e import resolve_model


def test_projections_of_a_gqa_model(stream):
    spec = resolve_model("qwen2.5-14b")[0]
    got = {name: (k, n) for name, k, n in stream.projections(spec)}
    assert got == {
        "qkv_proj": (5120, (40 + 2 * 8) * 128),
        "o_proj": (40 * 128, 5120),
        "gate_up_proj": (5120, 2 * 13824),
        "down_proj": (13824, 5120),
    }


def test_sets_cover_the_total_within_the_cap(stream):
    assert stream.sets_for(0.0, 283e6, 50e9) == 1  # replayed
    assert stream.sets_for(16e9, 283e6, 50e9) == 56
    assert stream.sets_for(1e9, 2e9, 50e9) == 2  # at least two sets when rotating
    assert stream.sets_for(16e9, 1e9, 4e9) == 4  # capped by memory


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--sections", "gemm,nope"], "known sections"),
        (["--sections", ""], "known sections"),
        (["--model", "mixtral-8x7b"], "MoE"),
        (["--model", "no-such-model"], "unknown model"),
        (["--gb", "0"], "--gb"),
        (["--layers", "0"], "--layers"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(stream, capsys, argv, words):
    assert stream.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


def test_the_table_compares_cold_with_replayed(stream):
    base = dict(section="gemm", op="down_proj", m=1, k=13824, n=5120, kernels=[])
    rows = [
        dict(base, sets=1, rotated_bytes=141e6, per_call_s=40e-6, weight_bytes_per_s=141e6 / 40e-6),
        dict(base, sets=113, rotated_bytes=16e9, per_call_s=44e-6, weight_bytes_per_s=141e6 / 44e-6),
        dict(section="layers", m=1, layers=48, step_bytes=1, layer_order_s=2e-3, first_layer_replayed_s=1e-3),
    ]
    lines = stream.table(rows)
    assert lines[0].endswith("cold / replayed 1.000")
    assert lines[1].endswith("cold / replayed 1.100")
    assert "cold / replayed 2.000" in lines[2]
