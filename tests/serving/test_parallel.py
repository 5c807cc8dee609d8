"""parallel_map in-process and on a local two-worker Ray instance."""

import pytest

from perfmodel.errors import InvalidInputError
from perfmodel.serving import Deployment, Requests, simulate
from perfmodel.serving.parallel import parallel_map, ray_available
from perfmodel.serving.simulator import simulate_summary


def _jobs(prompts):
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb")
    return [(dep, Requests.of([0.0] * 20, [p] * 20, [32] * 20)) for p in prompts]


def _strip(summaries):
    return [{k: v for k, v in s.items() if k != "sim_wall_s"} for s in summaries]


def test_local_backend_matches_loop():
    jobs = _jobs([500, 1000, 2000])
    got = parallel_map(simulate_summary, jobs, backend="local")
    assert _strip(got) == _strip([simulate(*j).summary() for j in jobs])
    assert got[0]["throughput_tokens_per_s"] > got[2]["throughput_tokens_per_s"]


def test_bad_backend():
    with pytest.raises(InvalidInputError):
        parallel_map(simulate_summary, [1], backend="spark")


@pytest.mark.skipif(ray_available(), reason="ray is installed")
def test_ray_backend_without_ray_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="not installed"):
        parallel_map(simulate_summary, [1, 2], backend="ray")


@pytest.mark.skipif(not ray_available(), reason="ray not installed (pip install .[distributed])")
def test_two_worker_ray_instance_gives_the_same_results(monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    jobs = _jobs([500, 1000, 2000, 4000])
    try:
        got = parallel_map(simulate_summary, jobs, backend="ray", num_cpus=2)
        assert ray.cluster_resources().get("CPU") == 2
    finally:
        ray.shutdown()
    assert _strip(got) == _strip([simulate(*j).summary() for j in jobs])


def test_local_ray_binds_to_loopback(monkeypatch):
    """A local Ray instance listens on 127.0.0.1 with no dashboard; RAY_ADDRESS joins the named cluster as is."""
    ray = pytest.importorskip("ray")
    from perfmodel.serving import parallel

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    parallel._ensure_ray(2)
    kw = calls[-1]
    assert kw["_node_ip_address"] == "127.0.0.1" and kw["include_dashboard"] is False
    assert "address" not in kw
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    parallel._ensure_ray(2)
    kw = calls[-1]
    assert kw["address"] == "ray://head:10001" and "_node_ip_address" not in kw
