import os
import sys

# Triton kernels run through Triton's CPU interpreter in the test suite (no GPU in CI).
os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# After the last test and the summary, leave the process at once with pytest's exit status. A C
# extension's teardown during interpreter shutdown (the suite loads torch, triton, Ray and
# Streamlit) was seen to crash once on a CI machine after every test had passed (exit 139); the
# results are already reported by then. PERFMODEL_TEST_HARD_EXIT=0 keeps the normal shutdown.
_EXIT_STATUS: dict[str, int] = {}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["code"] = int(exitstatus)


def pytest_unconfigure(config):
    if "code" in _EXIT_STATUS and os.environ.get("PERFMODEL_TEST_HARD_EXIT", "1") != "0":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["code"])


import shutil  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402


def run_perfmodel(*argv: str, timeout: float = 300, cwd=None, pythonpath=()) -> subprocess.CompletedProcess:
    """Run the ``perfmodel`` command (this checkout first on ``PYTHONPATH``) in a subprocess; text output.

    The installed console script when there is one on ``PATH``, else ``python -m perfmodel.cli``:
    what a user's script sees on stdout, C libraries' output included.  ``pythonpath``: folders put
    before the checkout (e.g. stubs that hide an optional package).
    """
    parts = (*map(str, pythonpath), ROOT, os.environ.get("PYTHONPATH"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in parts if p))
    exe = shutil.which("perfmodel")
    cmd = [exe] if exe else [sys.executable, "-m", "perfmodel.cli"]
    return subprocess.run(
        cmd + [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


@pytest.fixture()
def perfmodel_cli():
    """:func:`run_perfmodel` as a fixture."""
    return run_perfmodel
