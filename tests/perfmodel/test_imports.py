"""Imports on demand: the package, ``analyze`` and ``predict`` load no pandas, solver, torch or streamlit."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ("pandas", "pulp", "highspy", "torch", "streamlit", "ray", "pyarrow")


def _loaded_after(code: str) -> list[str]:
    script = code + f"\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import perfmodel",
        "import contextlib, io\nfrom perfmodel.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): assert main(['analyze']) == 0",
        "import contextlib, io\nfrom perfmodel.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): assert main(['analyze', '--json', '--pp', '2']) == 0",
        "import contextlib, io\nfrom perfmodel.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['predict', '--help'])",
    ],
    ids=["import", "analyze", "analyze-json-pp", "predict"],
)
def test_no_heavy_imports(code):
    assert _loaded_after(code) == []


@pytest.mark.parametrize(
    "code",
    [
        "import perfmodel\nperfmodel.Workload",
        "import perfmodel\nperfmodel.sweep('llama-3-8b', 'h100', context_len=[1000])",
    ],
)
def test_pandas_loads_on_use(code):
    assert "pandas" in _loaded_after(code)


def _run(code: str, unset: tuple[str, ...] = ()) -> str:
    env = {k: v for k, v in os.environ.items() if k not in unset} | {"PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    ).stdout


def test_import_loads_no_model_code():
    """The package's names load on first use: ``import perfmodel`` runs no numpy and no cost module."""
    out = _run(
        "import sys, perfmodel\nprint(sorted(m for m in ('numpy', 'perfmodel.analyze', 'perfmodel.costs', "
        "'perfmodel.hw', 'yaml') if m in sys.modules))"
    )
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "first",
    [
        "import perfmodel",
        "import perfmodel.analyze, perfmodel.sweep, perfmodel.predict\nimport perfmodel",
        "import perfmodel\nfrom perfmodel.sweep import iter_sweep\nfrom perfmodel.analyze import analyze_scenario\n"
        "from perfmodel.predict import predict_file\nimport perfmodel.cli",
        "from perfmodel import analyze, sweep, predict\nimport perfmodel.analyze, perfmodel.sweep, perfmodel.predict",
        "import perfmodel\nperfmodel.analyze\nimport perfmodel.analyze",
    ],
    ids=["plain", "submodules-first", "submodules-after", "from-import", "function-then-submodule"],
)
def test_functions_named_as_submodules_stay_functions(first):
    """``perfmodel.analyze``, ``.sweep`` and ``.predict`` are the functions in every import order (importing the
    submodule of the same name does not rebind them), and each runs."""
    code = first + (
        "\nimport perfmodel, types\n"
        "names = ('analyze', 'sweep', 'predict')\n"
        "assert not any(isinstance(getattr(perfmodel, n), types.ModuleType) for n in names), names\n"
        "a = perfmodel.analyze('llama-3-8b', 'h100', context_len=1000, output_tokens=10)\n"
        "s = perfmodel.predict({'op': 'gemm', 'm': 64, 'n': 64, 'k': 64, 'dtype': 'bf16'}, 'h100')\n"
        "df = perfmodel.sweep('llama-3-8b', 'h100', context_len=[1000], output_tokens=10)\n"
        "assert float(df['prefill_s'].iloc[0]) == a.to_dict()['prefill_s'] and s > 0\n"
        "import sys\n"
        "assert sys.modules['perfmodel.sweep'].iter_sweep and callable(perfmodel.sweep)\n"
        "print('ok')"
    )
    assert _run(code).strip().endswith("ok")


def test_public_names_and_submodules_resolve():
    """Every name of ``__all__`` resolves; a core submodule is reachable as an attribute; an unknown name and the
    optional subpackages (torch, solver, streamlit) raise AttributeError without loading anything."""
    out = _run(
        "import perfmodel, sys\n"
        "missing = [n for n in perfmodel.__all__ if getattr(perfmodel, n, None) is None]\n"
        "assert missing == [], missing\n"
        "assert perfmodel.phases.prefill_cost and perfmodel.hw.load_gpu\n"
        "for n in ('no_such_name', 'kernels', 'planners', 'dashboard', 'validation'):\n"
        "    assert not hasattr(perfmodel, n), n\n"
        "assert 'perfmodel.kernels' not in sys.modules and 'torch' not in sys.modules\n"
        "print(sorted(set(perfmodel.__all__) - set(dir(perfmodel))))"
    )
    assert out.strip() == "[]"


def test_cli_leaves_blas_environment_as_it_was():
    """The CLI loads numpy with one BLAS thread for its elementwise commands and restores the environment."""
    out = _run(
        "import contextlib, io, os\nfrom perfmodel.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): assert main(['gpus']) == 0\n"
        "print([v for v in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS') if v in os.environ])",
        unset=("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"),
    )
    assert out.strip() == "[]"


def test_one_gpu_analyze_loads_no_multi_gpu_pricing():
    """A one-GPU scenario is checked and priced without :mod:`perfmodel.parallel` or the MoE routes
    (the degree rules it needs live in :mod:`perfmodel.degrees`); a pipeline layout loads them."""
    probe = "import sys\nprint('perfmodel.parallel' in sys.modules, 'perfmodel.ep_route' in sys.modules)"
    one = _run("import perfmodel\nperfmodel.analyze('llama-3-8b', 'h100', context_len=4000)\n" + probe)
    assert one.split() == ["False", "False"]
    pp = _run("import perfmodel\nperfmodel.analyze('llama-3-8b', 'h100', context_len=4000, pp=2)\n" + probe)
    assert pp.split()[0] == "True"
