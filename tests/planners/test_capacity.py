"""Capacity planner: prices, pruning, exactness against brute force, Pareto front, CLI."""

import itertools
import json
import math

import pytest

from perfmodel.cli import main
from perfmodel.serving import LengthDist, Slo, Workload
from perfmodel.serving.parallel import ray_available
from perfmodel.planners.capacity import (
    CapacityQuery,
    PlannerError,
    Shape,
    _point,
    load_prices,
    plan_capacity,
    plot_pareto,
    shapes,
)
from perfmodel.planners.errors import InfeasibleError

_SLO = Slo(ttft_s=0.5, tpot_s=0.05)


def _query(rate=15.0, slo=_SLO, gpus=("a100-sxm-80gb", "h100-sxm-80gb"), n=200, **kw):
    reqs = Workload(n, rate, LengthDist.parse(2048), LengthDist.parse(64), seed=2).generate()
    kw.setdefault("tp_options", (1, 2))
    kw.setdefault("max_gpus", 4)
    return CapacityQuery("llama-3-8b", reqs, slo, gpus, deployment_kw={"kv_policy": "queue"}, **kw)


def test_shipped_prices_have_source_and_date():
    prices = load_prices()
    assert {"a100-sxm-80gb", "h100-sxm-80gb", "h200-sxm-141gb", "b200"} <= set(prices)
    for p in prices.values():
        assert p.usd_per_gpu_hour > 0 and p.source.strip() and p.date.strip()


@pytest.mark.parametrize(
    "body,msg",
    [
        ("prices: {h100-sxm-80gb: {usd_per_gpu_hour: 2}}", "source"),
        ("prices: {h100-sxm-80gb: {usd_per_gpu_hour: -2, source: x, date: y}}", "> 0"),
        ("[1, 2]", "prices"),
        ("a: [1, 2", "cannot read"),
    ],
)
def test_bad_price_files(tmp_path, body, msg):
    p = tmp_path / "p.yaml"
    p.write_text(body)
    with pytest.raises(PlannerError, match=msg):
        load_prices(p)


def test_winner_is_the_cheapest_feasible_by_brute_force():
    q = _query()
    prices = load_prices()
    plan = plan_capacity(q, prices, backend="local")
    assert plan.best.meets
    # exhaustive: every shape at every replica count within the GPU budget
    cheapest = math.inf
    for gpu in q.gpus:
        for tp in q.tp_options:
            for r in range(1, q.max_gpus // tp + 1):
                s = Shape(gpu, tp, 1, r, tp * prices[gpu].usd_per_gpu_hour, 0, 0)
                p = _point(q, s, r, q.requests)
                if p.meets:
                    cheapest = min(cheapest, p.usd_per_hour)
    # the search finds the brute-force optimum on its sample ...
    assert min(p.usd_per_hour for p in plan.points if p.meets) == pytest.approx(cheapest)
    # ... and the answer is the cheapest finalist that also held on fresh samples
    key = (plan.best.gpu, plan.best.tp, plan.best.pp, plan.best.replicas)
    assert plan.confirmed[key]
    for p in plan.runners_up:
        if p.usd_per_hour < plan.best.usd_per_hour:
            assert not plan.confirmed[(p.gpu, p.tp, p.pp, p.replicas)]


def test_analytical_pruning_names_the_binding_constraint():
    q = _query(slo=Slo(ttft_s=0.001, tpot_s=0.05))
    keep, pruned = shapes(q, load_prices())
    assert not keep and all("TTFT" in why for _, why in pruned)
    with pytest.raises(InfeasibleError, match=r"TTFT p90 >= .* > target 0.001 s \(\d+\.\d+x\)"):
        plan_capacity(q, load_prices(), backend="local")


def test_no_deployment_within_budget_says_how_far():
    q = _query(rate=200.0, gpus=("a100-sxm-80gb",), tp_options=(1,), max_gpus=2, slo=Slo(ttft_s=0.3))
    with pytest.raises(InfeasibleError) as e:
        plan_capacity(q, load_prices(), backend="local")
    msg = str(e.value)
    assert "2 GPUs" in msg or "max 2 GPUs" in msg


def test_pruned_shapes_would_fail_in_the_simulator():
    q = _query(slo=Slo(ttft_s=0.05, tpot_s=0.05))
    _keep, pruned = shapes(q, load_prices())
    names = {n for n, _ in pruned}
    assert "a100-sxm-80gb tp=1 pp=1" in names
    s = Shape("a100-sxm-80gb", 1, 1, 1, 1.3, 0, 0)
    for r in (1, 4):
        assert not _point(q, s, r, q.requests).meets


def test_pareto_front_and_png(tmp_path):
    plan = plan_capacity(_query(), load_prices(), backend="local")
    front = plan.pareto()
    assert front and front[0].usd_per_hour == plan.best.usd_per_hour or plan.best in front
    costs = [p.usd_per_hour for p in front]
    lat = [p.e2e_p90_s for p in front]
    assert costs == sorted(costs) and all(a > b for a, b in itertools.pairwise(lat))
    png = tmp_path / "front.png"
    plot_pareto(plan, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_json_and_errors(capsys, tmp_path):
    code = main(
        [
            "plan",
            "capacity",
            "--model",
            "llama-3-8b",
            "--rate",
            "10",
            "--requests",
            "150",
            "--candidates",
            "h100,a100-sxm-80gb",
            "--tp",
            "1",
            "--max-gpus",
            "2",
            "--slo-ttft",
            "1",
            "--slo-tpot",
            "0.05",
            "--backend",
            "local",
            "--json",
            "--png",
            str(tmp_path / "f.png"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads(out)
    assert d["best"]["gpus"] >= 1 and d["best"]["price_source"] and d["pareto"]
    assert (tmp_path / "f.png").exists()
    # calibrated by default: each candidate names where its curves come from
    assert d["provenance"]["h100-sxm-80gb"].startswith("measured:")
    assert d["provenance"]["a100-sxm-80gb"].startswith("transferred from h100-sxm-80gb")
    for argv, msg in (
        (["--rate", "0"], "arrival rate"),
        (["--rate", "5", "--tp", "x"], "--tp"),
        (["--rate", "5", "--candidates", "l40s", "--slo-ttft", "1"], "no price for l40s"),
        (["--rate", "5"], "at least one SLO"),
    ):
        code = main(["plan", "capacity", "--model", "llama-3-8b", "--backend", "local", *argv])
        err = capsys.readouterr().err
        assert code == 1 and msg in err and err.count("\n") == 1


@pytest.mark.skipif(not ray_available(), reason="ray not installed (pip install .[distributed])")
def test_ray_search_matches_local(monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    q = _query(n=120)
    local = plan_capacity(q, load_prices(), backend="local")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        remote = plan_capacity(q, load_prices(), backend="ray")
    finally:
        ray.shutdown()
    assert remote.best == local.best
    assert sorted(remote.points, key=str) == sorted(local.points, key=str)


def test_backend_choice_by_where_and_how_much(monkeypatch):
    from perfmodel.serving.parallel import Backend
    from perfmodel.planners.capacity import RAY_MIN_WORK_S, choose_backend

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert choose_backend(10, 0.5, cores=8)[0] is Backend.LOCAL  # 5 s: a local instance would not pay
    assert choose_backend(100, RAY_MIN_WORK_S, cores=8)[0] is Backend.RAY
    assert choose_backend(100, RAY_MIN_WORK_S, cores=1)[0] is Backend.LOCAL
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    b, why = choose_backend(1, 0.01, cores=1)
    assert b is Backend.RAY and "RAY_ADDRESS" in why


def test_auto_backend_prints_its_choice(capsys):
    plan_capacity(_query(), load_prices(), backend="auto")
    err = capsys.readouterr().err
    assert "plan capacity: in-process" in err or "plan capacity: on Ray" in err


def test_auto_with_ray_installed_stays_in_process_for_small_work(monkeypatch, capsys):
    import perfmodel.serving.parallel as par

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(par, "ray_available", lambda: True)
    monkeypatch.setattr(par, "_ensure_ray", lambda *a: pytest.fail("Ray started for a small local plan"))
    plan = plan_capacity(_query(), load_prices(), backend="auto")
    assert plan.best.meets
    assert "plan capacity: in-process (about" in capsys.readouterr().err
