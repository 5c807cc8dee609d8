"""perfmodel.validation.e2e: the whole-model runner, on the CPU with tiny configs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from perfmodel.models import load_model  # noqa: E402
from perfmodel.validation import e2e  # noqa: E402
from perfmodel.validation.e2e_model import E2EModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dry_run_writes_records_with_every_key(tmp_path):
    assert e2e.main(["--dry-run", "--out", str(tmp_path)]) == 0
    recs = [json.loads(line) for line in (tmp_path / "e2e_cpu.jsonl").read_text().splitlines()]
    pre_ctx, batched, dec_b, dec_ctx = e2e.SIZES["dry"]
    n_rows = len(pre_ctx) + len(batched) + len(dec_b) * len(dec_ctx)
    assert len(recs) == len(e2e.DRY_MODELS) * n_rows
    for r in recs:
        assert set(e2e.RECORD_KEYS) <= set(r), set(e2e.RECORD_KEYS) - set(r)
        assert r["status"] == "ok" and r["dry_run"] is True
        assert r["measured_s"] > 0 and r["predicted_s"] > 0
        assert r["error"] == pytest.approx(r["predicted_s"] / r["measured_s"] - 1)
        assert r["layers_run"] == r["layers_total"] == 2
        assert r["method"] == "host_clock"
        if r["phase"] == "prefill":
            assert r["chunk_tokens"] is None
    moe = [r for r in recs if r["model"] == "tiny-moe"]
    assert {r["moe_path"] for r in moe} <= {"grouped_mm", "expert_loop"}
    assert {r["phase"] for r in recs} == {"prefill", "decode"}
    # the report reads what the run wrote
    scores = e2e.score(recs)
    assert {s["phase"] for s in scores} == {"prefill", "decode"}


@pytest.mark.parametrize("name", ["tiny-dense", "tiny-moe"])
def test_builder_holds_the_parameters_the_spec_counts(name):
    spec = load_model(str(e2e.CONFIG_DIR / f"{name}.json"))
    assert E2EModel(spec, "cpu").param_count() == spec.param_count()


def test_cut_layers_build_the_cut_spec():
    spec = e2e.with_layers(load_model(str(e2e.CONFIG_DIR / "tiny-moe.json")), 1)
    m = E2EModel(spec, "cpu")
    assert len(m.layers) == 1 and m.param_count() == spec.param_count()


def test_grouped_and_loop_moe_paths_agree():
    spec = load_model(str(e2e.CONFIG_DIR / "tiny-moe.json"))
    a, b = E2EModel(spec, "cpu", moe_path="auto"), E2EModel(spec, "cpu", moe_path="loop")
    ids = torch.randint(0, spec.vocab, (2, 16))
    ya = a(ids, a.new_cache(2, 16, fill=False), 0, 16).float()
    yb = b(ids, b.new_cache(2, 16, fill=False), 0, 16).float()
    assert torch.linalg.norm(ya - yb) / torch.linalg.norm(yb) < 1e-2


def test_moe_block_is_the_routed_weighted_sum_of_expert_mlps():
    spec = load_model(str(e2e.CONFIG_DIR / "tiny-moe.json"))
    m = E2EModel(spec, "cpu", dtype=torch.float32)
    lay = next(lay for lay in m.layers if "experts" in lay)
    hn = torch.randn(9, spec.hidden)
    want = torch.zeros_like(hn)
    probs = (hn @ lay["w_router"]).softmax(dim=-1)
    for t in range(hn.shape[0]):  # per token: its top-k experts, weights renormalised over them
        w, e = probs[t].topk(spec.moe.top_k)
        for wi, ei in zip(w / w.sum(), e):
            gu = hn[t] @ lay["experts"]["w_gu"][ei]
            g, u = gu.chunk(2)
            want[t] += wi * ((torch.nn.functional.silu(g) * u) @ lay["experts"]["w_down"][ei])
    if "shared" in lay:
        g, u = (hn @ lay["shared"]["w_gu"]).chunk(2, dim=-1)
        want += (torch.nn.functional.silu(g) * u) @ lay["shared"]["w_down"]
    torch.testing.assert_close(m._moe(hn, lay), want, atol=1e-4, rtol=1e-4)


def test_fused_and_torch_rope_paths_agree_in_prefill_and_decode():
    spec = load_model(str(e2e.CONFIG_DIR / "tiny-dense.json"))
    a, b = E2EModel(spec, "cpu", rope="fused"), E2EModel(spec, "cpu", rope="torch")
    ids = torch.randint(0, spec.vocab, (2, 12))
    ca, cb = a.new_cache(2, 16, fill=False), b.new_cache(2, 16, fill=False)
    ya, yb = a(ids, ca, 0, 12).float(), b(ids, cb, 0, 12).float()
    assert torch.linalg.norm(ya - yb) / torch.linalg.norm(yb) < 2e-2
    nxt = torch.randint(0, spec.vocab, (2, 1))
    ya, yb = a(nxt, ca, 12, 13).float(), b(nxt, cb, 12, 13).float()  # decode reads the keys the kernel wrote
    assert torch.linalg.norm(ya - yb) / torch.linalg.norm(yb) < 2e-2
    with pytest.raises(ValueError, match="rope"):
        E2EModel(spec, "cpu", rope="fast")


def test_every_shipped_e2e_config_loads_and_is_buildable():
    for p in sorted(e2e.CONFIG_DIR.glob("*.json")):
        assert "_source" in json.loads(p.read_text())
        spec, _ = e2e.resolve_model(p.stem)
        assert spec.num_layers >= 1
    spec, _ = e2e.resolve_model("mixtral-8x7b")  # from perfmodel/configs
    assert spec.moe.num_experts == 8


def test_plan_cuts_layers_and_skips_what_does_not_fit():
    plans = e2e.plan(["qwen2.5-32b"], "h100-sxm-80gb", 80e9, "full")
    p = plans[0]
    assert p.spec.num_layers < p.layers_total == 64
    assert p.spec.weight_bytes() <= e2e.WEIGHT_SHARE * 80e9
    big = [r for r in p.rows if r.phase == "decode" and r.batch == 256 and r.context == 131072][0]
    assert big.skip_reason.startswith("does not fit")
    ran = [r for r in p.rows if not r.skip_reason]
    assert ran and all(r.predicted_s > 0 and r.timed_calls >= 2 for r in ran)
    assert all(r.timed_calls == 2 for r in ran if r.phase == "prefill" and r.context >= 65536)


def test_plan_keeps_only_the_phases_asked():
    both = e2e.plan(["llama-3.2-3b"], "h100-sxm-80gb", 80e9, "quick")[0].rows
    pre = e2e.plan(["llama-3.2-3b"], "h100-sxm-80gb", 80e9, "quick", phases=("prefill",))[0].rows
    assert {r.phase for r in both} == {"prefill", "decode"}
    assert pre and {r.phase for r in pre} == {"prefill"}
    assert [r.label for r in pre] == [r.label for r in both if r.phase == "prefill"]


def test_bad_phases_is_one_line_and_exit_2(capsys):
    assert e2e.main(["--plan", "--phases", "prefill,warmup"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--phases" in err


def test_report_median_p90_max_on_synthetic_records(tmp_path):
    errs = [0.01, -0.02, 0.03, -0.04, 0.05, 0.06, -0.07, 0.08, 0.09, -0.10]
    recs = [
        {
            "gpu_model": "h100-sxm-80gb",
            "phase": "decode",
            "status": "ok",
            "measured_s": 1.0,
            "predicted_s": 1.0 + e,
            "error": e,
        }
        for e in errs
    ]
    recs += [
        {
            "gpu_model": "h100-sxm-80gb",
            "phase": "decode",
            "status": "skipped",
            "measured_s": None,
            "predicted_s": 1.0,
            "error": None,
        }
    ]
    recs += [
        {
            "gpu_model": "h200-sxm-141gb",
            "phase": "prefill",
            "status": "ok",
            "measured_s": 2.0,
            "predicted_s": 2.2,
        }
    ]
    (s_dec,) = [s for s in e2e.score(recs) if s["phase"] == "decode"]
    assert s_dec["rows"] == 10
    assert s_dec["median_abs_error"] == pytest.approx(0.055)
    assert s_dec["p90_abs_error"] == pytest.approx(0.091)  # numpy's linear interpolation
    assert s_dec["max_abs_error"] == pytest.approx(0.10)
    (s_pre,) = [s for s in e2e.score(recs) if s["phase"] == "prefill"]
    assert s_pre["median_error"] == pytest.approx(0.1)  # error computed when a record lacks it
    f = tmp_path / "e2e_x.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    md = tmp_path / "r.md"
    assert e2e.main(["report", str(f), "--md", str(md)]) == 0
    assert "| h100-sxm-80gb | decode | 10 | 5.5% | 9.1% | 10.0% |" in md.read_text()


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "perfmodel.validation.e2e", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--plan", "--models", "no-such-model"], "unknown model 'no-such-model'"),
        (["--plan", "--models", "llama-3.2-3b,,"], "empty name"),
        (["--plan", "--layers", "0"], "--layers"),
        (["--bogus"], "unrecognized arguments"),
        (["--dry-run"], "--out DIR is required"),
        (["report", "/no/such/file.jsonl"], "record file not found"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, needle):
    p = _cli(*args)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], p.stderr


def test_plan_prints_an_estimate_without_a_gpu():
    p = _cli("--plan", "--quick", "--models", "llama-3.2-3b")
    assert p.returncode == 0, p.stderr
    assert "estimated GPU time on h100-sxm-80gb" in p.stderr
