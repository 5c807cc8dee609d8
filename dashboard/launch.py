"""Start the dashboard listening on localhost, from whatever directory: ``python -m perfmodel.dashboard``.

``streamlit run dashboard/app.py`` reads ``.streamlit/config.toml`` only when
started from the repository root; this launcher passes the server settings on
the command line instead, so the dashboard listens on this machine only
wherever it is started.  Extra arguments go to Streamlit after ours, so
``python -m perfmodel.dashboard --server.address 0.0.0.0`` exposes it deliberately.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

APP = Path(__file__).resolve().with_name("app.py")
DEFAULT_ADDRESS = "localhost"
DEFAULT_PORT = 8501


def streamlit_argv(
    extra: Sequence[str] = (), address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT
) -> list[str]:
    """``sys.argv`` for Streamlit's CLI: ``streamlit run app.py --server.address ... [extra]``."""
    return [
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        address,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        *extra,
    ]


def main(argv: Sequence[str] | None = None, address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT) -> int:
    """Run Streamlit's CLI in this process with :func:`streamlit_argv`; returns its exit status."""
    try:
        from streamlit.web import cli as stcli
    except ModuleNotFoundError:
        sys.stderr.write('perfmodel: error: the dashboard needs streamlit (pip install -e ".[dashboard]")\n')
        return 1
    sys.argv = streamlit_argv(list(sys.argv[1:] if argv is None else argv), address, port)
    try:
        stcli.main()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
