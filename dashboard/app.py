"""Entry point of the what-if dashboard: ``streamlit run dashboard/app.py``.

Pages are added only where their back end is importable; each page is a
script under ``dashboard/views/`` that calls the public Python API.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # running from a checkout without ``pip install -e .``
    sys.path.insert(0, str(ROOT))

import streamlit as st

VIEWS = Path(__file__).resolve().parent / "views"


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _analyze_takes(name: str) -> bool:
    import perfmodel

    return name in inspect.signature(perfmodel.analyze).parameters


def _gpu_record_files() -> list[Path]:
    """``validation/data/<gpu>.jsonl`` files of known GPUs (the op and layer records)."""
    from perfmodel.hw import list_gpus

    known = set(list_gpus())
    return [p for p in (ROOT / "validation" / "data").glob("*.jsonl") if p.stem in known]


def pages() -> list:
    """The pages whose back ends exist in this tree."""
    out = [st.Page(str(VIEWS / "whatif.py"), title="What-if", icon=":material/tune:", default=True)]
    if _has("perfmodel.knobs") and _analyze_takes("knobs"):
        out.append(st.Page(str(VIEWS / "knobs.py"), title="KV-cache knobs", icon=":material/compress:"))
    if _has("perfmodel.planners.moe") and _has("perfmodel.planners.sp"):
        out.append(st.Page(str(VIEWS / "planners.py"), title="Planners", icon=":material/grid_view:"))
    if _has("perfmodel.serving"):
        out.append(st.Page(str(VIEWS / "serving.py"), title="Serving", icon=":material/dns:"))
    if _has("perfmodel.validation.report") and _gpu_record_files():
        out.append(st.Page(str(VIEWS / "validation.py"), title="Validation", icon=":material/fact_check:"))
    return out


from perfmodel.dashboard import common

st.set_page_config(page_title="perfmodel what-if", page_icon=":material/speed:", layout="wide")
common.keep_scenario()
st.navigation(pages()).run()
