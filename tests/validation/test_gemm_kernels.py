"""Reading cuBLAS kernel names back from GEMM records."""

import numpy as np
import pytest

from perfmodel.validation.gemm_kernels import error_by_kind, kernel_map, main, parse_kernels, split_k_table

SPLIT = [
    "nvjet_sm90_tst_64x8_64x16_4x1_v_bz_splitK_NNT",
    "void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16>(...)",
]
ONE = ["Memset (Device)", "nvjet_sm90_tst_320x128_64x3_1x2_h_bz_coopB_NNT"]


def test_parse_reads_tile_split_and_launches():
    g = parse_kernels(SPLIT)
    assert (g.tile_n, g.tile_m, g.split_k, g.launches) == (64, 8, True, 2)
    g = parse_kernels(ONE)
    assert (g.tile_n, g.tile_m, g.split_k, g.launches) == (320, 128, False, 1)  # the memset is not a launch
    g = parse_kernels(["gemv2T_kernel_val<int, int, __nv_bfloat16>"])
    assert g.tile_m is None and not g.split_k and g.launches == 1


def _rec(m, n, k, kernels, t=1e-5):
    return {"op": "gemm", "m": m, "n": n, "k": k, "kernels": kernels, "measured_s": t}


def test_records_win_over_names_only_runs_and_tables_list_split_shapes():
    recs = [
        _rec(1, 3072, 3072, SPLIT),
        _rec(256, 3072, 3072, ONE),
        {"op": "gemm", "m": 8, "n": 64, "k": 64, "measured_s": 1e-6},
    ]
    extra = [_rec(1, 3072, 3072, ONE), _rec(4, 3072, 3072, SPLIT)]
    km = kernel_map(recs, extra)
    assert km[(1, 3072, 3072)].split_k and km[(4, 3072, 3072)].split_k and not km[(256, 3072, 3072)].split_k
    assert (8, 64, 64) not in km  # no names recorded
    assert "| 3072 x 3072 | 1, 4 |" in split_k_table(km)
    err = error_by_kind(recs, np.array([1.1e-5, 0.8e-5, 1e-6]), km)
    assert err["split-K"][0] == 1 and err["split-K"][1] == pytest.approx(0.1)
    assert err["one kernel"][1] == pytest.approx(0.2) and err["unknown"] == (1, 0.0, 0.0)


@pytest.mark.slow
def test_cli_on_committed_records(capsys):
    assert main(["--gpu", "h200-sxm-141gb"]) == 0
    out = capsys.readouterr().out
    assert "M with split-K" in out and "| split-K |" in out and "| one kernel |" in out
    assert main(["--gpu", "no-such-gpu"]) == 1
    assert "error:" in capsys.readouterr().out
