"""Workload generation and trace reading."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel.errors import InvalidInputError
from perfmodel.serving import LengthDist, Requests, TraceFormatError, Workload, read_trace, write_trace
from perfmodel.serving.workload import parse_rate


def test_poisson_arrivals_have_the_rate_and_are_seeded():
    w = Workload(20_000, 40.0, LengthDist.parse(2048), LengthDist.parse(128), seed=7)
    a, b = w.generate(), w.generate()
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert a.arrival_s[0] == 0 and np.all(np.diff(a.arrival_s) >= 0)
    assert len(a) / a.arrival_s[-1] == pytest.approx(40.0, rel=0.03)
    c = Workload(20_000, 40.0, LengthDist.parse(2048), LengthDist.parse(128), seed=8).generate()
    assert not np.array_equal(a.arrival_s, c.arrival_s)


def test_all_at_once():
    r = Workload(5, math.inf, LengthDist.parse(10), LengthDist.parse(3)).generate()
    assert np.all(r.arrival_s == 0) and list(r.prompt_len) == [10] * 5


def test_distributions():
    rng = np.random.default_rng(0)
    ln = LengthDist.parse("lognormal:2000:0.5").sample(50_000, rng)
    assert ln.mean() == pytest.approx(2000, rel=0.02) and ln.min() >= 1
    capped = LengthDist.parse("lognormal:2000:1.5:3000").sample(10_000, rng)
    assert capped.max() == 3000
    u = LengthDist.parse("uniform:5:9").sample(10_000, rng)
    assert set(np.unique(u)) == {5, 6, 7, 8, 9}


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "-5",
        "2.5",
        "lognormal:2048",
        "gamma:1:2",
        "uniform:9:3",
        "uniform:0:3",
        "lognormal:2048:-1",
        "abc",
        "lognormal:100:0.5:0",
    ],
)
def test_bad_lengths(text):
    with pytest.raises(InvalidInputError):
        LengthDist.parse(text)


@pytest.mark.parametrize("rate", ["0", "-1", "nan", "fast"])
def test_bad_rates(rate):
    with pytest.raises(InvalidInputError):
        parse_rate(rate)
    assert parse_rate("inf") == math.inf


def test_bad_workload():
    with pytest.raises(InvalidInputError):
        Workload(0, 1.0, LengthDist.parse(1), LengthDist.parse(1))
    with pytest.raises(InvalidInputError):
        Workload(3, -1.0, LengthDist.parse(1), LengthDist.parse(1))
    with pytest.raises(InvalidInputError):
        Requests.of([0.0, 1.0], [5, 0], [1, 1])
    with pytest.raises(InvalidInputError):
        Requests.of([-1.0], [5], [1])


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_trace_round_trip_sorts_by_arrival(tmp_path, suffix):
    r = Requests.of([0.5, 0.0, 2.25], [10, 20, 30], [1, 2, 3])
    path = tmp_path / f"t{suffix}"
    write_trace(path, r)
    back = read_trace(path)
    assert list(back.arrival_s) == [0.0, 0.5, 2.25]
    assert list(back.prompt_len) == [20, 10, 30] and list(back.output_len) == [2, 1, 3]


@pytest.mark.parametrize(
    "suffix,body,line,what",
    [
        (
            ".jsonl",
            '{"arrival_s": 0, "prompt_len": 5, "output_len": 1}\n\n{"arrival_s": 1, "prompt_len": 5}\n',
            3,
            "missing field 'output_len'",
        ),
        (".jsonl", '{"arrival_s": 0, "prompt_len": 5, "output_len": 1}\n{not json\n', 2, "not valid JSON"),
        (".jsonl", "[1, 2, 3]\n", 1, "expected a JSON object"),
        (".jsonl", '{"arrival_s": -1, "prompt_len": 5, "output_len": 1}\n', 1, "arrival_s must be >= 0"),
        (
            ".jsonl",
            '{"arrival_s": 0, "prompt_len": 5.5, "output_len": 1}\n',
            1,
            "prompt_len must be an integer",
        ),
        (".csv", "arrival_s,prompt_len,output_len\n0,5,1\n1,5\n", 3, "expected 3 columns"),
        (".csv", "arrival_s,prompt_len,output_len\n0,5,1\n1,x,2\n", 3, "not a number"),
        (".csv", "arrival_s,prompt,output_len\n0,5,1\n", 1, "header lacks prompt_len"),
    ],
)
def test_malformed_trace_lines_name_the_line(tmp_path, suffix, body, line, what):
    path = tmp_path / f"bad{suffix}"
    path.write_text(body)
    with pytest.raises(TraceFormatError, match=f":{line}: .*{what}"):
        read_trace(path)


def test_missing_and_empty_traces(tmp_path):
    with pytest.raises(TraceFormatError, match="cannot read"):
        read_trace(tmp_path / "none.jsonl")
    (tmp_path / "e.jsonl").write_text("\n# comment\n")
    with pytest.raises(TraceFormatError, match="no requests"):
        read_trace(tmp_path / "e.jsonl")
    assert issubclass(TraceFormatError, ValueError)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 1e6), st.integers(1, 10**6), st.integers(1, 10**5)), min_size=1, max_size=30
    )
)
def test_trace_round_trip_property(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("t") / "t.jsonl"
    r = Requests.of(*zip(*rows))
    write_trace(path, r)
    back = read_trace(path)
    assert np.array_equal(back.arrival_s, r.arrival_s) and np.array_equal(back.prompt_len, r.prompt_len)
