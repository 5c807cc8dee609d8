"""``--version``, defaults in ``--help``, ``gpus`` / ``models`` with specs and ``--json``, the top-level API."""

import json

import perfmodel


def test_version(perfmodel_cli):
    p = perfmodel_cli("--version")
    assert p.returncode == 0 and p.stdout.startswith("perfmodel ") and len(p.stdout.split()) == 2


def test_simulate_help_names_its_own_default_model(perfmodel_cli):
    p = perfmodel_cli("simulate", "--help")
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    assert "(default: llama-3-8b)" in text and "yi-34b" not in text
    assert "(default: h100-sxm-80gb)" in text and "(default: 1000)" in text


def test_analyze_help_shows_defaults(perfmodel_cli):
    text = " ".join(perfmodel_cli("analyze", "--help").stdout.split())
    assert "(default: yi-34b)" in text and "(default: a100-sxm-80gb)" in text and "default: 250" in text


def test_gpus_json_lists_specs(perfmodel_cli):
    p = perfmodel_cli("gpus", "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert set(rows) == set(perfmodel.list_gpus())
    h100 = perfmodel.load_gpu("h100")
    r = rows[h100.name]
    assert r["hbm_bytes"] == h100.hbm_bytes and r["hbm_bytes_per_s"] == h100.hbm_bytes_per_s
    assert r["peak_flops"]["bf16"] == h100.flops_for(perfmodel.Dtype.BF16) and "h100" in r["aliases"]
    table = perfmodel_cli("gpus")
    assert table.returncode == 0 and "TB/s" in table.stdout and "TFLOP/s" in table.stdout


def test_models_json_lists_specs(perfmodel_cli):
    p = perfmodel_cli("models", "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert set(rows) == set(perfmodel.list_models())
    m = perfmodel.load_model("llama-3-70b")
    r = rows["llama-3-70b"]
    assert (r["params"], r["layers"], r["max_context"]) == (m.param_count(), m.num_layers, m.max_context)
    assert "llama-3-70b" in perfmodel_cli("models").stdout


def test_simulate_at_the_top_level():
    from perfmodel.serving import simulate

    assert perfmodel.simulate is simulate and "simulate" in perfmodel.__all__
    res = perfmodel.simulate(
        perfmodel.Deployment.make("llama-3-8b", "h100"),
        perfmodel.Workload(10, 5.0, perfmodel.LengthDist.parse("256"), perfmodel.LengthDist.parse("8")),
    )
    assert res.summary()["completed"] == 10
