import pytest


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--cases", "gqa:4:1024"], "KIND:BATCH:KV_LEN"),
        (["--cases", "mla:4"], "KIND:BATCH:KV_LEN"),
        (["--cases", "fp8:x:1024"], "must be integers"),
        (["--cases", "mla:4:1000"], "multiple of 64"),
        (["--splits", "8,0"], ">= 1"),
        (["--splits", "eight"], "not an integer"),
    ],
)
def test_bad_cases_or_splits_are_one_line_and_exit_2(splits, capsys, argv, words):
    assert splits.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


def test_good_arguments_reach_the_device_check(splits, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert splits.main(["--cases", "mla:32:32768,d80:4:65536", "--splits", "8,9"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_the_default_cases_parse(splits):
    cases = splits.parse_cases(splits.DEFAULT_CASES)
    assert {k for k, _, _ in cases} == set(splits.KINDS) and all(b >= 1 for _, b, _ in cases)
