import pytest


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--layout", "16:5:64"], "not a multiple"),
        (["--layout", "32:8:96"], "head_dim must be 64 or 128"),
        (["--variant", "no_such_setting=1"], "not NAME=VALUE"),
        (["--variant", "fused_merge=maybe"], "integer, True or False"),
    ],
)
def test_bad_layout_or_variant_is_one_line_and_exit_2(profile, capsys, argv, words):
    assert profile.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


def test_good_arguments_reach_the_device_check(profile, capsys, monkeypatch):
    # without a GPU a well-formed call stops only at the CUDA check, after the parsing passed
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert profile.main(["--layout", "16:4:64", "--variant", "fused_merge=False"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
