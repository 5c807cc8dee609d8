"""``benchmarks/decode_ptx.py`` compiles the decode kernels for sm_90 without a GPU: the stream-K
configurations must compile with the settings the wrapper launches them with (a constexpr left out
turns a static branch into a dynamic one, which fails to compile)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "decode_ptx.py"


def _run_script(*args):
    """``decode_ptx.py`` in a process of its own: this test session runs Triton's interpreter
    (tests/conftest.py), and compiling needs real jit functions."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, str(_PATH), *args], capture_output=True, text=True, env=env, timeout=600
    )


def _cuda_compiler_available() -> bool:
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        return False
    return True


def test_every_configuration_is_named_once_with_its_phantom_setting(ptx):
    import importlib

    wrapper = importlib.import_module("perfmodel.kernels.attention_decode")
    phantom = wrapper.DecodeConfig().phantom_tiles
    assert phantom > 0
    dk = ptx.load_kernels(ptx._REPO / "kernels" / "_decode_kernels.py")
    confs = list(ptx.configurations(dk))
    names = [name for name, _, _ in confs]
    assert len(names) == len(set(names)) == 18
    for name, _, constants in confs:
        if name.startswith("stream_k_d"):
            fused = name.endswith("fused1")
            assert constants["PHANTOM"] == (phantom if fused else 0), name


@pytest.mark.skipif(not _cuda_compiler_available(), reason="triton's CUDA compiler is not installed")
def test_the_stream_k_kernels_compile_for_sm90(tmp_path):
    run = _run_script("--out", str(tmp_path), "--only", "stream_k_d128_p0")
    assert run.returncode == 0, run.stderr[-2000:]
    files = sorted(p.name for p in tmp_path.glob("*.ptx"))
    assert files == [f"stream_k_d128_p0_fused{u}.ptx" for u in (0, 1)]
    for name in files:
        code = (tmp_path / name).read_text()
        assert ".entry _stream_k_kernel" in code and "ld.global" in code, name


def test_only_names_no_configuration_in_one_line(tmp_path):
    run = _run_script("--out", str(tmp_path), "--only", "no_such")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["error: no configuration is named no_such..."]


def test_attention_ptx_counts_the_instructions_it_names():
    sys.path.insert(0, str(_PATH.parent))
    try:
        import attention_ptx
    finally:
        sys.path.remove(str(_PATH.parent))
    ptx = "cp.async.cg.shared.global [a], [b];\ncp.async.commit_group;\ncvt.rn.f16x2.e4m3x2 a, b;\ncvt.bf16.f16 b0, a0;"
    assert attention_ptx.ptx_counts(ptx) == {"cp_async": 2, "cvt_e4m3": 1, "cvt_bf16_f16": 1}
    assert attention_ptx.ptx_counts("") == dict.fromkeys(attention_ptx.PTX_COUNTED, 0)
