"""``sweep`` estimates its size before evaluating: refuses (typed error) or streams a CSV in chunks."""

import pandas as pd
import pytest

import perfmodel
from perfmodel.errors import TooLargeError
from perfmodel.sweep import BASE_COLUMNS, DEFAULT_MAX_BYTES, iter_sweep, sweep, sweep_size


def test_size_is_points_times_columns_times_8():
    s = sweep_size(range(1, 1001), [1, 2], [1], [250, 500])
    assert s.points == 4000 and s.columns == BASE_COLUMNS and s.bytes == 4000 * BASE_COLUMNS * 8
    assert DEFAULT_MAX_BYTES == 2 * 2**30


def test_api_refuses_before_allocating():
    # 10 billion points: refused at once (today: a 76 GiB allocation)
    with pytest.raises(TooLargeError) as e:
        perfmodel.sweep("llama-3-8b", "h100", context_len=range(1, 10**10 + 1))
    assert e.value.count == 10**10 and e.value.needed_bytes == 10**10 * BASE_COLUMNS * 8
    assert "10,000,000,000 points" in str(e.value)
    assert isinstance(e.value, perfmodel.InvalidInputError)


def test_max_bytes_overrides_and_chunks_match():
    kw = dict(context_len=range(1000, 41000, 1000), batch=[1, 4], output_tokens=[0, 250])
    whole = sweep("llama-3-8b", "h100", **kw)
    assert len(whole) == 160
    with pytest.raises(TooLargeError):
        sweep("llama-3-8b", "h100", max_bytes=1000, **kw)
    parts = list(iter_sweep("llama-3-8b", "h100", chunk_points=7, **kw))
    assert len(parts) == 23 and max(len(p) for p in parts) == 7
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True).astype(object), whole.astype(object))


def test_cli_refuses_with_count_and_bytes(perfmodel_cli):
    r = perfmodel_cli(
        "sweep", "--model", "llama-3-8b", "--gpu", "h100", "--context", "1:64000000:1", timeout=120
    )
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "64,000,000 points" in lines[0] and "bytes" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    r = perfmodel_cli(
        "sweep",
        "--model",
        "llama-3-8b",
        "--gpu",
        "h100",
        "--context",
        "1:10000000000:1",
        "--out",
        "x.csv",
        timeout=120,
    )
    assert r.returncode == 1 and "10,000,000,000 points" in r.stderr and "Traceback" not in r.stderr


def test_cli_streams_csv_beyond_budget(perfmodel_cli, tmp_path):
    args = [
        "sweep",
        "--model",
        "llama-3-8b",
        "--gpu",
        "h100",
        "--context",
        "1000:300000:1000",
        "--batch",
        "1,2",
    ]
    small, whole = tmp_path / "small.csv", tmp_path / "whole.csv"
    r = perfmodel_cli(*args, "--max-bytes", "20000", "--out", small)
    assert r.returncode == 0, r.stderr
    assert "in chunks" in r.stderr
    assert perfmodel_cli(*args, "--out", whole).returncode == 0
    assert small.read_text() == whole.read_text()
    assert len(small.read_text().splitlines()) == 601
