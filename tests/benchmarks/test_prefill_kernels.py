import pytest


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--cases", "phi-3-mini-4k"], "MODEL:LAYERS"),
        (["--cases", "phi-3-mini-4k:0"], "LAYERS >= 1"),
        (["--cases", "no-such-model:4"], "unknown model"),
        (["--context", "0"], "--context"),
        (["--decode-batch", "-1"], "--decode-batch"),
    ],
)
def test_bad_cases_are_one_line_and_exit_2(prefill, capsys, argv, words):
    assert prefill.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


def test_good_arguments_reach_the_device_check(prefill, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert prefill.main(["--cases", "llama-3.2-3b:2", "--context", "512"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
    assert prefill.main(["--cases", "llama-3.2-3b:2", "--decode-batch", "4"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_the_default_cases_parse(prefill):
    assert [n for n, _ in prefill.parse_cases(prefill.DEFAULT_CASES)] == [
        "phi-3-mini-4k",
        "llama-3.2-3b",
        "qwen2.5-14b",
    ]
