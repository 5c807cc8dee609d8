"""Entry point of the what-if dashboard: ``streamlit run dashboard/app.py``.

Pages are added only where their back end is importable; each page is a
script under ``dashboard/views/`` that calls the public Python API.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # running from a checkout without ``pip install -e .``
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

VIEWS = Path(__file__).resolve().parent / "views"


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def pages() -> list:
    """The pages whose back ends exist in this tree."""
    out = [st.Page(str(VIEWS / "whatif.py"), title="What-if", icon=":material/tune:", default=True)]
    return out


from dashboard import common  # noqa: E402

st.set_page_config(page_title="perfmodel what-if", page_icon=":material/speed:", layout="wide")
common.keep_scenario()
st.navigation(pages()).run()
