"""AppTest runs of every dashboard page: first run, each main widget changed, invalid combinations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

import perfmodel
from perfmodel.dashboard.common import bound_label, fmt_seconds

perfmodel_takes_pp = "pp" in __import__("inspect").signature(perfmodel.analyze).parameters
APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
TIMEOUT_S = 60


def run_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def expect(**kw) -> dict:
    base = {
        "model": "yi-34b",
        "gpu": "a100-sxm-80gb",
        "context_len": 50_000,
        "output_tokens": 250,
        "batch": 1,
        "tp": 1,
        "mode": "calibrated",
        "weight_dtype": "bf16",
        "kv_dtype": "bf16",
    }
    base.update(kw)
    return perfmodel.analyze(**base).to_dict()


def assert_matches_api(at: AppTest, **kw) -> None:
    """The four headline metrics and their bounds equal what the API returns for the same inputs."""
    want = expect(**kw)
    got = metrics(at)
    assert got["Prefill (time to first token)"] == fmt_seconds(want["prefill_s"])
    assert got["Decode time per token"] == fmt_seconds(want["decode_s_per_token"])
    assert got["Max concurrency (users)"] == f"{want['max_concurrency']:,}"
    assert got["Context switch"] == fmt_seconds(want["context_switch_s"])
    captions = " ".join(c.value for c in at.caption)
    assert f"bound: **{bound_label(want['bottleneck']['prefill'])}**" in captions
    assert f"bound: **{bound_label(want['bottleneck']['decode'])}**" in captions


def test_first_run_shows_the_running_example():
    at = run_app()
    assert at.title[0].value == "What-if"
    assert [s.label for s in at.sidebar.selectbox][:2] == ["Model", "GPU"]
    assert at.selectbox(key="gpu").value == "a100-sxm-80gb"
    assert_matches_api(at)
    assert not at.error
    # calibrated by default: the band and the datasheet bound beside the estimate, and the provenance
    captions = " ".join(c.value for c in at.caption)
    assert (
        "80% band" in captions and "peak bound" in captions and "transferred from h100-sxm-80gb" in captions
    )
    # sections: memory, sweep, roofline, comparison, JSON
    heads = [h.value for h in at.subheader]
    for h in (
        "Memory per GPU",
        "Against context length",
        "Roofline of one forward pass",
        "Compare two GPUs",
        "Scenario as JSON",
    ):
        assert h in heads
    # the JSON shown for download is the API's to_dict() of the scenario
    shown = json.loads(at.code[0].value)
    assert shown == json.loads(json.dumps(expect()))


@pytest.mark.parametrize(
    "key, value, api",
    [
        ("model", "llama-3-8b", {"model": "llama-3-8b"}),
        ("gpu", "h100-sxm-80gb", {"gpu": "h100-sxm-80gb"}),
        ("context_len", 8000, {"context_len": 8000}),
        ("output_tokens", 1000, {"output_tokens": 1000}),
        ("tp", 2, {"tp": 2}),
        ("weight_dtype", "fp8", {"weight_dtype": "fp8"}),
        ("kv_dtype", "fp8", {"kv_dtype": "fp8"}),
        ("mode", "peak", {"mode": "peak"}),
    ],
)
def test_each_widget_changes_the_numbers(key, value, api):
    at = run_app()
    before = metrics(at)
    widget = next(w for w in (at.selectbox, at.number_input, at.radio) for w in w if w.key == key)
    widget.set_value(value).run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert_matches_api(at, **api)
    assert metrics(at) != before
    if key == "mode":  # the API's notes of the scenario are shown
        for note in expect(mode="peak")["notes"]:
            assert note in [i.value for i in at.info]


def test_batch_changes_concurrency_users_and_memory():
    at = run_app()
    at.number_input(key="context_len").set_value(8000).run()
    at.number_input(key="batch").set_value(4).run()
    assert not at.exception and not at.error
    assert_matches_api(at, context_len=8000, batch=4)
    mem_caption = next(c.value for c in at.caption if c.value.startswith("weights "))
    assert "(4 × " in mem_caption


def test_tp_not_dividing_heads_shows_one_error_with_the_valid_degrees():
    at = run_app()
    at.number_input(key="tp").set_value(3).run()
    assert not at.exception
    assert len(at.error) == 1
    msg = at.error[0].value
    assert "tp=3" in msg and "56 query heads" in msg and "valid: 1, 2, 4, 7, 8" in msg
    assert not at.metric  # nothing computed from an invalid scenario


def test_does_not_fit_shows_bytes_and_a_tp_that_fits_and_keeps_the_sweep():
    at = run_app()
    at.number_input(key="batch").set_value(8).run()
    assert not at.exception
    msg = at.error[0].value
    with pytest.raises(perfmodel.DoesNotFitError) as info:
        perfmodel.analyze("yi-34b", "a100-sxm-80gb", context_len=50_000, output_tokens=250, batch=8)
    assert f"{info.value.needed_bytes / 2**30:,.1f} GiB" in msg
    assert f"tp={info.value.suggested_tp} fits" in msg
    assert "Against context length" in [h.value for h in at.subheader]
    assert not at.metric


def test_comparison_and_roofline_widgets():
    at = run_app()
    at.selectbox(key="compare_gpu").set_value("b200").run()
    assert not at.exception
    table = at.table[0].value
    a = expect()
    b = expect(gpu="b200")
    row = table.loc["Prefill (80% band)"]
    for cell, want in zip(row.iloc[:2], (a, b)):  # the value, then its 80% band
        assert (
            cell == f"{fmt_seconds(want['prefill_s'])} ({fmt_seconds(want['prefill_s_low'])} – "
            f"{fmt_seconds(want['prefill_s_high'])})"
        )
    assert row.iloc[2] == f"{b['prefill_s'] / a['prefill_s']:.2f}×"
    assert table.loc["bound: decode"].iloc[1] == bound_label(b["bottleneck"]["decode"])
    # which GPU is measured, transferred or datasheet
    assert table.loc["provenance"].iloc[0].startswith("transferred from h100-sxm-80gb")
    assert table.loc["provenance"].iloc[1].startswith("transferred from h200-sxm-141gb")
    at.radio(key="roofline_phase").set_value("prefill").run()
    assert not at.exception
    ops = at.dataframe[0].value
    assert {"qkv_proj", "attention", "o_proj"} <= set(ops["op"])
    # prefill chunks are compute-heavier than a decode step: the attention op's intensity rises
    assert ops.loc[ops["op"] == "attention", "intensity_flops_per_byte"].iloc[0] > 100


@pytest.mark.skipif(not perfmodel_takes_pp, reason="analyze has no pp/ep in this tree")
def test_parallelism_inputs_reach_analyze_and_invalid_ones_are_one_error():
    at = run_app()
    at.selectbox(key="model").set_value("mixtral-8x7b").run()
    at.number_input(key="pp").set_value(2)
    at.number_input(key="ep").set_value(2).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    want = perfmodel.analyze(
        "mixtral-8x7b", "a100-sxm-80gb", context_len=50_000, output_tokens=250, pp=2, ep=2
    )
    assert metrics(at)["Decode time per token"] == fmt_seconds(want.to_dict()["decode_s_per_token"])
    at.selectbox(key="model").set_value("yi-34b").run()
    assert not at.exception
    assert len(at.error) == 1 and "ep=2 needs a mixture-of-experts model" in at.error[0].value


@pytest.mark.skipif(not perfmodel_takes_pp, reason="analyze takes no parallel layout in this tree")
def test_a_topology_of_another_gpu_in_the_comparison_is_one_error_not_a_crash():
    # the sidebar's layout goes to the second GPU too; a system that does not hold that GPU is one error
    # line for the second column (the first GPU's numbers stay)
    at = run_app()
    at.selectbox(key="gpu").set_value("h100-sxm-80gb").run()
    at.selectbox(key="topology").set_value("dgx-h100").run()
    assert not at.exception, [e.message for e in at.exception]
    assert len(at.error) == 1 and "holds h100-sxm-80gb GPUs" in at.error[0].value
    want = perfmodel.analyze(
        "yi-34b", "h100-sxm-80gb", context_len=50_000, output_tokens=250, topology="dgx-h100"
    )
    assert metrics(at)["Decode time per token"] == fmt_seconds(want.to_dict()["decode_s_per_token"])
    table = at.table[-1].value
    other = [c for c in table.columns if "H100" not in c and c != "second / first"]
    assert other and (table[other[0]] == "not priced (see above)").all()
