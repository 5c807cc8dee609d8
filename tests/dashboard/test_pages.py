"""AppTest runs of the KV-knobs, Planners, Serving and Validation pages (each only where its back end exists)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

import perfmodel
from perfmodel.dashboard.common import fmt_seconds

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")


def has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


# ---- KV-cache knobs ------------------------------------------------------------------------------------------
knobs_landed = pytest.mark.skipif(not has("perfmodel.knobs"), reason="perfmodel.knobs not in this tree")


@knobs_landed
def test_knobs_page_compares_with_and_without():
    from perfmodel.knobs import Knobs

    at = open_page("knobs")
    ok(at)
    assert at.title[0].value == "KV-cache knobs"
    assert any("cost, not quality" in w.value for w in at.warning)
    at.selectbox(key="knob_kv_dtype").set_value("fp8").run()
    ok(at)
    want = perfmodel.analyze("yi-34b", "a100-sxm-80gb", knobs=Knobs(kv_dtype="fp8")).to_dict()
    table = at.table[0].value
    assert table.loc["Decode time per token", "with the knobs"] == fmt_seconds(want["decode_s_per_token"])
    assert table.loc["Decode time per token", "without the knobs"] == fmt_seconds(
        want["without_knobs"]["decode_s_per_token"]
    )
    assert table.loc["Max concurrency (users)", "with the knobs"] == f"{want['max_concurrency']:,}"


@knobs_landed
@pytest.mark.parametrize(
    "key, value",
    [
        ("knob_keep_ratio", 0.5),
        ("knob_window", 4096),
        ("knob_prefix", 2048),
        ("knob_attention_every", 4),
        ("knob_kv_layers", 30),
    ],
)
def test_each_knob_widget_runs(key, value):
    at = open_page("knobs")
    widget = next(w for group in (at.slider, at.number_input) for w in group if w.key == key)
    widget.set_value(value).run()
    ok(at)
    assert at.table, "the with/without table is drawn"


@knobs_landed
def test_knobs_page_prices_a_multi_gpu_layout():
    # knobs and pipeline stages together: the table prices the layout, the caption says so; a knob the
    # layout does not model (a shared prefix) is one error that names it
    from perfmodel.knobs import Knobs

    at = open_page("knobs")
    at.number_input(key="pp").set_value(2).run()
    at.selectbox(key="knob_kv_dtype").set_value("fp8").run()
    ok(at)
    want = perfmodel.analyze("yi-34b", "a100-sxm-80gb", pp=2, knobs=Knobs(kv_dtype="fp8")).to_dict()
    table = at.table[0].value
    assert table.loc["Decode time per token", "with the knobs"] == fmt_seconds(want["decode_s_per_token"])
    assert table.loc["Decode time per token", "without the knobs"] == fmt_seconds(
        want["without_knobs"]["decode_s_per_token"]
    )
    assert any(
        "Parallelism: pp=2" in c.value and "context sweep price this layout" in c.value for c in at.caption
    )
    at.number_input(key="knob_prefix").set_value(2048).run()
    assert not at.exception
    assert len(at.error) == 1 and "shared_prefix_tokens" in at.error[0].value


@knobs_landed
def test_invalid_knob_combination_is_one_error():
    at = open_page("knobs")
    at.checkbox(key="knob_prune").check().run()
    assert not at.exception
    assert len(at.error) == 1 and "prune_prefill needs" in at.error[0].value


# ---- Planners ------------------------------------------------------------------------------------------------
planners_landed = pytest.mark.skipif(
    not (has("perfmodel.planners.moe") and has("perfmodel.planners.sp")), reason="planners not in this tree"
)


@planners_landed
def test_moe_planner_beats_or_matches_every_baseline():
    at = open_page("planners")
    ok(at)
    at.number_input(key="moe_experts").set_value(32)
    at.number_input(key="moe_slots").set_value(5)
    at.slider(key="moe_time_limit").set_value(1)
    at.button[0].click().run()
    ok(at)
    table = at.dataframe[0].value
    plan = table.loc["plan (ILP)", "max_gpu_load"]
    assert (table["max_gpu_load"] >= plan - 1e-6).all()
    assert at.get("vega_lite_chart") or at.get("arrow_vega_lite_chart")


def _plan_ratio(at) -> float:
    """The 'plan is X×' of the best-baseline metric."""
    delta = next(m for m in at.metric if m.label.startswith("Best")).proto.delta
    return float(delta.split("plan is ")[1].rstrip("×"))


@planners_landed
def test_planner_defaults_are_cases_where_planning_pays():
    at = open_page("planners")
    ok(at)
    assert _plan_ratio(at) < 0.995  # the MoE plan's max GPU load below the best baseline's
    at.radio(key="planner").set_value("SP split").run()
    ok(at)
    assert _plan_ratio(at) < 0.95  # the SP makespan below the best static degree's


@planners_landed
def test_moe_infeasible_slots_show_numbers():
    at = open_page("planners")
    at.number_input(key="moe_slots").set_value(2)
    at.button[0].click().run()
    assert not at.exception
    assert "32 experts do not fit: 8 GPUs x 2 slots = 16 slots" in at.error[0].value


@planners_landed
def test_sp_planner_and_a_model_too_big_for_one_gpu():
    at = open_page("planners")
    at.radio(key="planner").set_value("SP split").run()
    assert not at.exception
    at.number_input(key="sp_n").set_value(16)
    at.slider(key="sp_time_limit").set_value(1)
    at.button[0].click().run()
    ok(at)
    labels = [m.label for m in at.metric]
    assert "Makespan, plan" in labels and "Lower bound" in labels
    at.selectbox(key="sp_model").set_value("llama-3.1-405b")
    at.button[0].click().run()
    assert not at.exception
    assert len(at.error) == 1 and "does not fit on one h100-sxm-80gb" in at.error[0].value
    assert "GiB" in at.error[0].value


def test_upload_helpers_accept_json_and_csv_tables():
    pytest.importorskip("perfmodel.planners.moe")
    from perfmodel.dashboard.common import UploadError, parse_upload
    from perfmodel.dashboard.uploads import lengths_from_upload, loads_from_upload, trace_from_upload

    loads = loads_from_upload(parse_upload("l.json", json.dumps({"loads": [[1, 2, 3], [4, 5, 6]]}).encode()))
    assert loads.shape == (2, 3)
    assert loads_from_upload(parse_upload("l.csv", b"e0,e1\n1,2\n3,4\n")).tolist() == [[1, 2], [3, 4]]
    assert lengths_from_upload(parse_upload("s.csv", b"length\n100\n200\n")).tolist() == [100, 200]
    with pytest.raises(UploadError, match="at most"):
        loads_from_upload([[1.0] * 600])
    with pytest.raises(UploadError):
        loads_from_upload(parse_upload("l.csv", b"a,b\nx,y\n"))
    trace = trace_from_upload(
        parse_upload("t.csv", b"arrival_s,prompt_len,output_len\n0,100,10\n0.5,200,20\n")
    )
    assert trace == ("trace", (0.0, 0.5), (100, 200), (10, 20))
    with pytest.raises(UploadError, match="missing output_len"):
        trace_from_upload(parse_upload("t.json", b'[{"arrival_s": 0, "prompt_len": 5}]'))


# ---- Serving -------------------------------------------------------------------------------------------------
serving_landed = pytest.mark.skipif(not has("perfmodel.serving"), reason="perfmodel.serving not in this tree")


@serving_landed
def test_serving_page_matches_the_simulator():
    from perfmodel.serving import Deployment, LengthDist, Slo, Workload, simulate

    at = open_page("serving")
    ok(at)
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", tp=1, replicas=1, kv_policy="swap", max_num_seqs=256)
    res = simulate(
        dep, Workload(300, 10.0, LengthDist.parse("lognormal:2048:1.0:7000"), LengthDist.parse("128"))
    )
    s = res.summary(Slo(ttft_s=2.0, tpot_s=0.05))
    got = {m.label: m.value for m in at.metric}
    assert got["TTFT p50"] == fmt_seconds(s["ttft_s"]["p50"]) and got["TTFT p90"] == fmt_seconds(
        s["ttft_s"]["p90"]
    )
    assert got["TPOT p90"] == fmt_seconds(s["tpot_s"]["p90"])
    assert got["Peak concurrency"] == f"{s['peak_concurrency']:,}"
    assert "HBM occupancy over time" in [h.value for h in at.subheader]


@serving_landed
@pytest.mark.parametrize(
    "key, value, words",
    [
        ("serve_prompt", "bogus", "expected N, lognormal"),
        ("serve_tp", 3, "does not divide the 32 query heads"),
    ],
)
def test_serving_bad_inputs_are_one_error(key, value, words):
    at = open_page("serving")
    w = next(w for group in (at.text_input, at.number_input) for w in group if w.key == key)
    w.set_value(value)
    at.button[0].click().run()
    assert not at.exception
    assert len(at.error) == 1 and words in at.error[0].value


@serving_landed
def test_serving_policy_and_replicas_change_the_run():
    at = open_page("serving")
    at.number_input(key="serve_replicas").set_value(2)
    at.selectbox(key="serve_policy").set_value("recompute")
    at.number_input(key="serve_n").set_value(100)
    at.button[0].click().run()
    ok(at)
    assert any("2x(h100-sxm-80gb" in c.value for c in at.caption)


@serving_landed
def test_serving_cached_prefixes_match_the_simulator():
    from perfmodel.serving import Deployment, LengthDist, Workload, simulate
    from perfmodel.serving.workload import CachedPrefix

    at = open_page("serving")
    at.number_input(key="serve_n").set_value(60)
    at.text_input(key="serve_prefixes").set_value("4096:0.5:0.8, 8192:0.25:1:host")
    at.button[0].click().run()
    ok(at)
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", tp=1, replicas=1, kv_policy="swap", max_num_seqs=256)
    w = Workload(
        60,
        10.0,
        LengthDist.parse("lognormal:2048:1.0:7000"),
        LengthDist.parse("128"),
        prefixes=(CachedPrefix.parse("4096:0.5:0.8"), CachedPrefix.parse("8192:0.25:1:host")),
    )
    pc = simulate(dep, w).summary()["prefix_cache"]
    assert any(f"{pc['hits']:,} hits of {pc['requests_with_prefix']:,}" in c.value for c in at.caption)
    at.text_input(key="serve_prefixes").set_value("4096:2")
    at.button[0].click().run()
    assert not at.exception and len(at.error) == 1 and "share" in at.error[0].value


# ---- Validation ----------------------------------------------------------------------------------------------
validation_landed = pytest.mark.skipif(
    not (
        has("perfmodel.validation.report")
        and any(p.stem in perfmodel.list_gpus() for p in (ROOT / "validation" / "data").glob("*.jsonl"))
    ),
    reason="validation records not in this tree",
)


@pytest.mark.slow
@validation_landed
def test_validation_page_reproduces_the_report_table():
    from perfmodel.validation.records import read_records
    from perfmodel.validation.report import evaluate

    at = open_page("validation")
    ok(at)
    gpu = at.selectbox(key="val_gpu").value
    rep = evaluate(read_records(ROOT / "validation" / "data" / f"{gpu}.jsonl", gpu), gpu)
    overall = next(c for c in rep.calibrated if c.key == "ALL held-out records")
    got = {m.label: m.value for m in at.metric}
    assert got["Median error, calibrated"] == f"{overall.median:.1%}"
    table = at.dataframe[0].value
    assert table.loc[table["op class"] == "ALL held-out records", "n"].iloc[0] == overall.n
    at.radio(key="val_mode").set_value("peak").run()
    ok(at)
    at.multiselect(key="val_classes").set_value(["gemm"]).run()
    ok(at)


@pytest.mark.slow  # the validation page fits a profile (about 40 s on two cores; `pytest -m slow` shares the fit)
def test_every_landed_back_end_has_its_page():
    at = AppTest.from_file(APP, default_timeout=60).run()
    expected = ["views/whatif.py"]
    if has("perfmodel.knobs"):
        expected.append("views/knobs.py")
    if has("perfmodel.planners.moe") and has("perfmodel.planners.sp"):
        expected.append("views/planners.py")
    if has("perfmodel.serving"):
        expected.append("views/serving.py")
    if has("perfmodel.validation.report") and any(
        p.stem in perfmodel.list_gpus() for p in (ROOT / "validation" / "data").glob("*.jsonl")
    ):
        expected.append("views/validation.py")
    for page in expected:
        at.switch_page(page).run()  # raises unless the page is registered with st.navigation
        assert not at.exception, page
        assert at.title, page
