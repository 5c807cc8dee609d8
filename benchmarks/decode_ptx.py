"""Compile the Triton decode kernels for Hopper (sm_90) without a GPU and compare the code.

A change to ``kernels/`` changes ``kernels_sha256``, the version every validation record names.
When the change only restructures the source (a helper shared by two kernels, say), this shows
whether the compiled code changed at all: it compiles the split-KV kernel and the stream-K kernel
with the merge in the kernel and with the reduction kernel, at head_dim 64 and 128, flat and
paged caches, and the reduction kernel of each schedule (with and without stream-K's guessed
slots), 18 configurations with the settings the wrapper launches them with (programmatic dependent
launch for split-KV, not for stream-K; a setting an older source lacks is left out), and writes
their PTX with debug lines, debug labels and debug sections removed::

    python benchmarks/decode_ptx.py --out DIR [--source kernels/_decode_kernels.py] [--only PREFIX] [--resources]
    python benchmarks/decode_ptx.py --compare DIR_A DIR_B

``--compare`` prints the configurations whose PTX differs and exits 1 if any does. Needs triton
with its CUDA backend (the compiler only; no device).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
_PTRS = {
    "Q": "*bf16",
    "K": "*bf16",
    "V": "*bf16",
    "KV_LENS": "*i32",
    "BT": "*i32",
    "PO": "*fp32",
    "PL": "*fp32",
    "O": "*bf16",
    "Out": "*bf16",
    "CNT": "*i32",
    "RNG": "*i32",
}
_DIV16 = {
    "Q",
    "K",
    "V",
    "KV_LENS",
    "PO",
    "PL",
    "O",
    "Out",
    "RNG",
    "s_qb",
    "s_qh",
    "s_kb",
    "s_kh",
    "s_kn",
    "s_ob",
    "s_oh",
}
#: arguments the kernels take as tuples: (element types, paths of the elements divisible by 16)
_TUPLES = {
    "q_strides": (("i32", "i32"), ((0,), (1,))),
    "o_strides": (("i32", "i32"), ((0,), (1,))),
    # (K, V, block table, (s_kb, s_kh, s_kn, s_btb, page_size))
    "cache": (("*bf16", "*bf16", "*i32", ("i32",) * 5), ((0,), (1,), (3, 0), (3, 1), (3, 2))),
}


def normalised_ptx(ptx: str) -> str:
    """PTX without comments, ``.loc``/``.file`` lines, debug labels and the debug sections."""
    code = ptx.split(".section")[0]
    code = re.sub(r"//.*", "", code)
    keep = [
        ln
        for ln in code.split("\n")
        if ln.strip()
        and not ln.strip().startswith(".loc")
        and ".file" not in ln
        and not re.fullmatch(r"\$L__tmp\d+:", ln.strip())
    ]
    return "\n".join(keep) + "\n"


def _wrapper():
    """``perfmodel.kernels.attention_decode``, the wrapper of this repository (the module itself: as an
    attribute of ``kernels`` that name is the function)."""
    sys.path.insert(0, str(_REPO))
    try:
        return importlib.import_module("perfmodel.kernels.attention_decode")
    finally:
        sys.path.pop(0)


def _compile(fn, constants: dict) -> str:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = fn.arg_names
    constants = {k: v for k, v in constants.items() if k in names}  # settings an older source lacks
    sig = {
        n: (
            "constexpr"
            if n in constants
            else _TUPLES[n][0]
            if n in _TUPLES
            else _PTRS.get(n, "fp32" if n == "qk_scale" else "i32")
        )
        for n in names
    }
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in _DIV16 if n in names}
    for n, (_, paths) in _TUPLES.items():
        if n in names:
            attrs.update({(names.index(n), *path): [["tt.divisibility", 16]] for path in paths})
    src = ASTSource(fn, sig, constexprs={(names.index(k),): v for k, v in constants.items()}, attrs=attrs)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, num_stages=3))
    return normalised_ptx(k.asm["ptx"]), k.asm["cubin"]


def resources(cubin: bytes) -> str:
    """``cuobjdump -res-usage`` of a cubin (registers, stack, local and shared bytes per thread or
    block), with the ``cuobjdump`` that ships with triton's CUDA backend."""
    import tempfile

    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run(
            [str(tool), "-res-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    return " ".join(
        w
        for ln in out.splitlines()
        if "REG:" in ln
        for w in ln.split()
        if w.split(":")[0] in ("REG", "STACK", "SHARED", "LOCAL")
    )


def configurations(dk):
    """``(name, kernel, constants)`` of every compiled configuration of the kernels module ``dk``, with
    the settings this repository's wrapper launches them with."""
    wrapper = _wrapper()
    split_n = wrapper._GPU_META["BLOCK_N"]
    for head_dim, block_n in ((128, 64), (64, 128)):
        for paged in (False, True):
            base = dict(
                HEAD_DIM=head_dim, BLOCK_G=16, BLOCK_N=block_n, PAGED=paged, PRECISION="tf32", UPCAST=False
            )
            # as launched: split-KV with the wrapper's tile (64 keys at every head_dim) and programmatic
            # dependent launch, stream-K without
            yield (
                f"split_d{head_dim}_p{int(paged)}",
                dk._split_kv_kernel,
                dict(base, BLOCK_N=split_n, PDL=True),
            )
            for fused in (False, True):
                phantom = wrapper.DecodeConfig().phantom_tiles if fused else 0
                c = dict(base, B_P2=8, GP=4, BLOCK_S=16, FUSED=fused, WIDE=False, PHANTOM=phantom)
                yield f"stream_k_d{head_dim}_p{int(paged)}_fused{int(fused)}", dk._stream_k_kernel, c
        for name, stream_k, guess, pdl in (
            ("split", False, 0, True),
            ("stream_k", True, 0, False),
            ("stream_k_guess", True, 16, False),
        ):
            c = dict(HEAD_DIM=head_dim, BLOCK_S=16, STREAM_K=stream_k, GUESS_P2=guess, WIDE=False, PDL=pdl)
            yield f"reduce_{name}_d{head_dim}", dk._reduce_kernel, c


def load_kernels(source: Path):
    """The kernels module at ``source`` (a ``_decode_kernels.py``), loaded under another name."""
    spec = importlib.util.spec_from_file_location("_decode_kernels_under_test", source)
    dk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dk)
    return dk


def dump(source: Path, out: Path, only: str = "", show_resources: bool = False) -> int:
    """Write ``<configuration>.ptx`` under ``out`` for the kernels of ``source`` (those whose name
    starts with ``only``); returns the count. ``show_resources`` prints each one's registers, stack,
    local and static shared memory (:func:`resources`)."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for name, fn, constants in configurations(load_kernels(source)):
        if not name.startswith(only):
            continue
        code, cubin = _compile(fn, constants)
        (out / f"{name}.ptx").write_text(code)
        if show_resources:
            print(f"{name}: {resources(cubin)}")
        n += 1
    return n


def compare(a: Path, b: Path) -> list[str]:
    """Configurations whose PTX differs between two dumps (or exists in one only)."""
    names = sorted({p.name for p in a.glob("*.ptx")} | {p.name for p in b.glob("*.ptx")})
    return [
        n
        for n in names
        if not ((a / n).exists() and (b / n).exists() and (a / n).read_text() == (b / n).read_text())
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="folder for the PTX of each configuration")
    ap.add_argument("--source", type=Path, default=_REPO / "kernels" / "_decode_kernels.py")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("DIR_A", "DIR_B"))
    ap.add_argument(
        "--only", default="", metavar="PREFIX", help="compile only the configurations named PREFIX..."
    )
    ap.add_argument(
        "--resources",
        action="store_true",
        help="print each configuration's registers, stack, local and shared memory",
    )
    args = ap.parse_args()
    if args.compare:
        diff = compare(*args.compare)
        n = len({p.name for p in args.compare[0].glob("*.ptx")})
        print(
            f"{n - len(diff)} of {n} configurations compile to the same PTX"
            + (f"; differ: {diff}" if diff else "")
        )
        return 1 if diff else 0
    if args.out is None:
        print("error: give --out DIR or --compare DIR_A DIR_B", file=sys.stderr)
        return 2
    n = dump(args.source, args.out, args.only, args.resources)
    if n == 0:
        print(f"error: no configuration is named {args.only}...", file=sys.stderr)
        return 2
    print(f"compiled {n} configurations of {args.source} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
