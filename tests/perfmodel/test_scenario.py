"""One scenario type (perfmodel.scenario.Scenario), checked once, accepted by every entry point; the metrics
computed in one function, so sweep's rows and analyze's results agree column by column."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import perfmodel
from perfmodel.comm import DEFAULT_NODE_GPUS, GroupTooLargeError
from perfmodel.costs.collectives import collective_time
from perfmodel.calibration import peak_profile
from perfmodel.errors import InvalidInputError, PerfModelError
from perfmodel.knobs import Knobs
from perfmodel.ops import OpKind
from perfmodel.scenario import Layout, Scenario
from perfmodel.serving import Deployment
from perfmodel.sweep import METRIC_COLUMNS
from perfmodel.tables import fmt_bytes, fmt_seconds


def test_scenario_is_frozen_and_checked_once():
    s = Scenario.make("llama-3-8b", "h100", context_len=9000, output_tokens=10, layout=Layout(tp=2, pp=2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.batch = 2  # type: ignore[misc]
    assert s.layout.world == 4 and s.layout.multi and s.mode.value == "calibrated"
    assert any("trained window" in n for n in s.notes)
    assert s.replace(batch=3).batch == 3 and s.replace(batch=3).layout == s.layout
    with pytest.raises(InvalidInputError, match="pp=3"):
        s.replace(pp=3)


def test_every_entry_point_accepts_a_scenario():
    s = Scenario.make(
        "llama-3-8b", "h100", context_len=4000, output_tokens=100, batch=2, tp=2, knobs=Knobs(kv_dtype="fp8")
    )
    a = perfmodel.analyze(s).to_dict()
    assert (
        a
        == perfmodel.analyze("llama-3-8b", "h100", 4000, 100, 2, tp=2, knobs=Knobs(kv_dtype="fp8")).to_dict()
    )
    row = perfmodel.sweep(s).iloc[0]
    assert row.prefill_s == a["prefill_s"] and row.kv_cache_bytes == a["kv_cache_bytes"]
    assert len(perfmodel.sweep(s, context_len=[1000, 2000])) == 2
    dep = Deployment.from_scenario(s, replicas=2)
    ref = Deployment.make("llama-3-8b", "h100", tp=2, replicas=2, knobs=Knobs(kv_dtype="fp8"))
    assert (dep.tp, dep.pp, dep.replicas, dep.precision, dep.knobs, dep.profile.mode) == (
        ref.tp,
        ref.pp,
        ref.replicas,
        ref.precision,
        ref.knobs,
        ref.profile.mode,
    )
    with pytest.raises(InvalidInputError, match="sp=2"):
        Deployment.from_scenario(s.replace(sp=2))


GRID = [
    dict(),
    dict(knobs=Knobs(kv_dtype="fp8", kv_keep_ratio=0.5)),
    dict(pp=2),
    dict(sp=2, sp_kind="ulysses"),
]


@pytest.mark.parametrize("kw", GRID, ids=["tp", "knobs", "pp", "sp"])
def test_sweep_rows_equal_analyze_in_every_metric(kw):
    df = perfmodel.sweep(
        "llama-3-8b", "h100", context_len=[1000, 30000], batch=[1, 8], tp=[1, 2], output_tokens=[0, 200], **kw
    )
    assert df["fits"].any()
    for row in df.to_dict("records"):
        if not row["fits"]:
            continue
        a = perfmodel.analyze(
            "llama-3-8b", "h100", row["context_len"], row["output_tokens"], row["batch"], tp=row["tp"], **kw
        ).to_dict()
        for col in METRIC_COLUMNS:
            assert row[col] == pytest.approx(a[col], rel=1e-12, abs=0), col
        assert row["prefill_bound"] == a["bottleneck"]["prefill"]
        assert row["decode_bound"] == a["bottleneck"]["decode"]


BAD = [  # (scenario arguments, error class, message) refused alike by every entry point that takes them
    (dict(pp=3), InvalidInputError, "pp=3 does not divide the 32 layers"),
    (dict(tp=3), InvalidInputError, "tp=3"),
    (
        dict(tp=8, pp=8),
        GroupTooLargeError,
        f"a group of 64 GPUs exceeds one node of {DEFAULT_NODE_GPUS} and every "
        "system of h100-sxm-80gb GPUs described in hw/data/systems \\(the largest shipped one, dgx-h100-x4, has 32\\)",
    ),
    (dict(mode="fast"), InvalidInputError, "mode must be one of peak, calibrated, got 'fast'"),
    (dict(batch=0), InvalidInputError, "batch must be an integer >= 1"),
]
ENTRY = {
    "Scenario.make": lambda kw: Scenario.make("llama-3-8b", "h100", context_len=1000, **kw),
    "analyze": lambda kw: perfmodel.analyze("llama-3-8b", "h100", context_len=1000, **kw),
    "sweep": lambda kw: perfmodel.sweep("llama-3-8b", "h100", context_len=[1000], **kw),
    "Deployment.make": lambda kw: Deployment.make("llama-3-8b", "h100", **kw),
}


@pytest.mark.parametrize("entry", list(ENTRY))
@pytest.mark.parametrize("kw, cls, msg", BAD, ids=[next(iter(b[0])) + str(len(b[0])) for b in BAD])
def test_bad_scenario_same_error_everywhere(entry, kw, cls, msg):
    if entry == "Deployment.make" and "batch" in kw:
        pytest.skip("a deployment takes requests, not a batch")
    with pytest.raises(cls, match=msg) as info:
        ENTRY[entry](kw)
    assert isinstance(info.value, PerfModelError) and type(info.value) is not ValueError


CLI = {
    "analyze": ["analyze", "--model", "llama-3-8b", "--gpu", "h100", "--context", "1000"],
    "sweep": ["sweep", "--model", "llama-3-8b", "--gpu", "h100", "--context", "1000"],
    "simulate": [
        "simulate",
        "--model",
        "llama-3-8b",
        "--gpu",
        "h100",
        "--requests",
        "2",
        "--prompt-len",
        "1000",
    ],
}


@pytest.mark.parametrize("cmd", list(CLI))
def test_cli_layouts_beyond_a_node_priced_on_a_shipped_system_or_refused_alike(perfmodel_cli, cmd):
    r = perfmodel_cli(*CLI[cmd], "--tp", "8", "--pp", "8")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "a group of 64 GPUs exceeds one node of 8 and every system of h100-sxm-80gb GPUs" in r.stderr
    r = perfmodel_cli(*CLI[cmd], "--tp", "4", "--pp", "4", *(["--json"] if cmd != "sweep" else []))
    assert r.returncode == 0, r.stderr
    assert "the 16 GPUs are priced on dgx-h100-x4 (4 node(s) of 8)" in r.stdout + r.stderr


def test_layouts_beyond_their_system_are_refused_never_priced_as_one_node(perfmodel_cli):
    r = perfmodel_cli(
        "analyze", "--model", "llama-3-8b", "--gpu", "h100", "--sp", "100000", "--context", "100000"
    )
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "100,000 GPUs" in r.stderr, r.stderr
    h100 = perfmodel.load_gpu("h100")
    with pytest.raises(GroupTooLargeError, match="1,000,000 GPUs"):
        collective_time(OpKind.ALL_REDUCE, 1e6, 1_000_000, h100, peak_profile(h100))
    l40s = perfmodel.load_gpu("l40s")  # no shipped system of L40S holds 16
    with pytest.raises(GroupTooLargeError, match="16 GPUs exceeds one node of 8"):
        collective_time(OpKind.ALL_REDUCE, 1e6, 16, l40s, peak_profile(l40s))
    # without a named system, 16 H100s are priced over the nodes of dgx-h100-x4, not as one NVLink node
    default16 = collective_time(OpKind.ALL_REDUCE, 1e8, 16, h100, peak_profile(h100))
    assert (
        default16.total_s
        == collective_time(OpKind.ALL_REDUCE, 1e8, 16, h100, peak_profile(h100), "dgx-h100-x4").total_s
    )
    with pytest.raises(GroupTooLargeError, match="dgx-h100-x4 has 32"):
        collective_time(OpKind.ALL_REDUCE, 1e6, 1_000_000, h100, peak_profile(h100), "dgx-h100-x4")
    # within the cluster the topology describes: priced over its nodes, slower than inside one node
    one = collective_time(OpKind.ALL_REDUCE, 1e8, 8, h100, peak_profile(h100))
    four = collective_time(OpKind.ALL_REDUCE, 1e8, 32, h100, peak_profile(h100), "dgx-h100-x4")
    assert four.total_s > one.total_s
    a = perfmodel.analyze("llama-3-8b", "h100", 100_000, 10, sp=16, topology="dgx-h100-x4")
    assert a.parallel["world"] == 16


def test_does_not_fit_names_the_system_a_tp_beyond_the_node_is_priced_on():
    with pytest.raises(
        perfmodel.DoesNotFitError, match="tp=16 fits \\(16 GPUs, more than one node: priced on dgx-h100-x4"
    ):
        perfmodel.analyze("llama-3.1-405b", "h100", 4000)
    a = perfmodel.analyze("llama-3.1-405b", "h100", 4000, tp=16)
    assert any("priced on dgx-h100-x4" in n for n in a.notes)


def test_analyze_imports_no_solver():
    code = (
        "import sys; from perfmodel.cli import main; main(['analyze', '--context', '1000', '--json']); "
        "bad = [m for m in ('pulp', 'highspy', 'torch', 'streamlit') if m in sys.modules]; "
        "assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_knobs_to_dict_holds_numbers():
    from perfmodel.knobs import AttentionOffload, KvTier, TierKind

    pool = perfmodel.load_gpu("h100")
    d = Knobs(
        kv_keep_ratio=0.5, kv_budget_tokens=4000, kv_dtype="fp8", kv_tiers=(KvTier(TierKind.CXL, 1e12, 5e10),)
    ).to_dict()
    assert d["kv_keep_ratio"] == 0.5 and d["kv_budget_tokens"] == 4000 and d["kv_dtype"] == "fp8"
    assert d["kv_tiers"][0]["capacity_bytes"] == 1e12 and d["kv_tiers"][0]["bytes_per_s"] == 5e10
    d = Knobs(offload=AttentionOffload(pool, 50e9, 2.0, 5e-6)).to_dict()
    assert {k: v for k, v in d["offload"].items() if isinstance(v, str)} == {"pool_gpu": "h100-sxm-80gb"}
    assert d["offload"]["link_bytes_per_s"] == 50e9 and d["offload"]["pool_devices_per_gpu"] == 2.0


@pytest.mark.parametrize(
    "s, text",
    [(7200.0, "2.00 h"), (1.5, "1.50 s"), (0.0123, "12.3 ms"), (2.5e-5, "25 µs"), (float("inf"), "n/a")],
)
def test_fmt_seconds(s, text):
    assert fmt_seconds(s) == text


@pytest.mark.parametrize(
    "b, text",
    [
        (512, "512 B"),
        (6.13 * 2**30, "6.13 GiB"),
        (45.2 * 2**30, "45.2 GiB"),
        (531 * 2**20, "531 MiB"),
        (float("nan"), "n/a"),
    ],
)
def test_fmt_bytes(b, text):
    assert fmt_bytes(b) == text


def test_analyze_table_uses_the_shared_formatters(perfmodel_cli):
    argv = ("analyze", "--model", "llama-3-8b", "--gpu", "h100", "--context", "4000")
    d = __import__("json").loads(perfmodel_cli(*argv, "--json").stdout)
    table = perfmodel_cli(*argv).stdout
    assert fmt_seconds(d["context_switch_s"]) in table
    assert fmt_bytes(d["kv_cache_bytes"] / d["batch"]) in table
    assert np.isfinite(d["prefill_s"])
