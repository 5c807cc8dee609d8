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
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("code", [
    "import perfmodel",
    "import contextlib, io\nfrom perfmodel.cli import main\n"
    "with contextlib.redirect_stdout(io.StringIO()): assert main(['analyze']) == 0",
    "import contextlib, io\nfrom perfmodel.cli import main\n"
    "with contextlib.redirect_stdout(io.StringIO()): assert main(['analyze', '--json', '--pp', '2']) == 0",
    "import contextlib, io\nfrom perfmodel.cli import main\n"
    "with contextlib.redirect_stdout(io.StringIO()): main(['predict', '--help'])",
], ids=["import", "analyze", "analyze-json-pp", "predict"])
def test_no_heavy_imports(code):
    assert _loaded_after(code) == []


@pytest.mark.parametrize("code", ["import perfmodel\nperfmodel.Workload",
                                  "import perfmodel\nperfmodel.sweep('llama-3-8b', 'h100', context_len=[1000])"])
def test_pandas_loads_on_use(code):
    assert "pandas" in _loaded_after(code)
