import json

import pytest

from perfmodel.cli import main
from perfmodel.planners.synthetic import lognormal_lengths, markov_affinity, zipf_loads


@pytest.fixture()
def files(tmp_path):
    loads = zipf_loads(8, 2, 1.0, tokens=4000, top_k=2, seed=1)
    (tmp_path / "loads.json").write_text(json.dumps({"loads": loads.tolist()}))
    (tmp_path / "aff.json").write_text(json.dumps({"affinity": markov_affinity(loads).tolist()}))
    (tmp_path / "len.json").write_text(json.dumps({"lengths": lognormal_lengths(12, seed=2).tolist()}))
    return tmp_path


def test_plan_moe_json(files, capsys):
    rc = main(
        [
            "plan",
            "moe",
            "--loads",
            str(files / "loads.json"),
            "--gpus",
            "4",
            "--slots-per-gpu",
            "3",
            "--nodes",
            "2",
            "--affinity",
            str(files / "aff.json"),
            "--time-limit",
            "5",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["layers"]) == 2 and len(out["layers"][0]["placement"]) == 4
    assert set(out["baselines"]) >= {"contiguous", "round_robin", "greedy_lpt", "eplb_hierarchical"}
    assert {"name", "status", "gap", "seconds"} <= set(out["solver"])
    assert out["layers"][0]["cross_gpu_tokens"] is not None


def test_plan_moe_table_and_cbc(files, capsys):
    rc = main(
        [
            "plan",
            "moe",
            "--loads",
            str(files / "loads.json"),
            "--gpus",
            "4",
            "--slots-per-gpu",
            "2",
            "--solver",
            "cbc",
            "--time-limit",
            "5",
        ]
    )
    assert rc == 0
    assert "contiguous" in capsys.readouterr().out


def test_plan_sp_json(files, capsys):
    rc = main(
        [
            "plan",
            "sp",
            "--lengths",
            str(files / "len.json"),
            "--gpus",
            "4",
            "--model",
            "llama-3-8b",
            "--gpu",
            "h100",
            "--sp-kind",
            "ring",
            "--time-limit",
            "3",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(i for g in out["groups"] for i in g["sequences"]) == list(range(12))
    assert out["makespan_s"] >= out["lower_bound_s"] > 0
    assert "static_sp_4" in out["baselines"]


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["plan", "moe", "--loads", "LOADS", "--gpus", "2", "--slots-per-gpu", "3"], "8 experts do not fit"),
        (["plan", "moe", "--loads", "nope.json", "--gpus", "2", "--slots-per-gpu", "3"], "no such file"),
        (
            ["plan", "sp", "--lengths", "LEN", "--gpus", "0", "--model", "llama-3-8b", "--gpu", "h100"],
            "at least one GPU",
        ),
    ],
)
def test_bad_input_is_one_line(files, capsys, argv, msg):
    argv = [
        a.replace("LOADS", str(files / "loads.json")).replace("LEN", str(files / "len.json")) for a in argv
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_plan_json_stdout_is_only_json(files, perfmodel_cli, solver):
    """The solvers' own output (HiGHS prints its banner from C) never reaches stdout."""
    for argv in (
        ["plan", "moe", "--loads", files / "loads.json", "--gpus", "4", "--slots-per-gpu", "3"],
        [
            "plan",
            "sp",
            "--lengths",
            files / "len.json",
            "--gpus",
            "4",
            "--model",
            "llama-3-8b",
            "--gpu",
            "h100",
        ],
    ):
        p = perfmodel_cli(*argv, "--solver", solver, "--time-limit", "3", "--json")
        assert p.returncode == 0, p.stderr
        json.loads(p.stdout)
