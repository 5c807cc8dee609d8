import json

import numpy as np
import pytest

from perfmodel.planners import PlannerError
from perfmodel.planners.inputs import read_lengths, read_loads, trace_counts


def test_trace_counts():
    routes = [[[0, 1], [2, 3]], [[1, 2], [2, 0]]]
    loads, aff = trace_counts(routes)
    assert loads.tolist() == [[1, 2, 1, 0], [1, 0, 2, 1]]
    assert aff.shape == (1, 4, 4) and aff.sum() == 8 and aff[0, 1, 2] == 2


def test_read_trace_jsonl(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"experts": [[0], [1]]}\n[[1], [1]]\n')
    loads, aff = read_loads(p)
    assert loads.tolist() == [[1, 1], [0, 2]] and aff[0, 0, 1] == 1


def test_bad_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(PlannerError, match="not JSON"):
        read_loads(p)
    p.write_text(json.dumps({"loads": [[1, 2], [3]]}))
    with pytest.raises(PlannerError, match="loads"):
        read_loads(p)
    p.write_text(json.dumps({"lengths": []}))
    with pytest.raises(PlannerError, match="non-empty"):
        read_lengths(p)
    p.write_text(json.dumps({"lengths": [3, 4]}))
    assert np.array_equal(read_lengths(p), [3, 4])
