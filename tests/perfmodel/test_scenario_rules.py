"""One set of rules (perfmodel.scenario) across analyze, sweep and simulate (API and CLI)."""

import pytest

import perfmodel
from perfmodel.errors import InvalidInputError
from perfmodel.scenario import check_mode, validate_scenario, window_note
from perfmodel.serving import Deployment, Requests, simulate


def test_beyond_the_trained_window_is_a_note_everywhere():
    a = perfmodel.analyze("llama-3-8b", "h100", context_len=9000, output_tokens=10)
    assert any("trained window" in n for n in a.notes)
    df = perfmodel.sweep("llama-3-8b", "h100", context_len=[9000], output_tokens=[10])
    assert any("trained window" in n for n in df.attrs["notes"])
    res = simulate(Deployment.make("llama-3-8b", "h100"), Requests.of([0.0], [9000], [10]))
    assert any("trained window" in n for n in res.notes)
    assert window_note(perfmodel.load_model("llama-3-8b"), 100) is None


def test_pp_must_divide_the_layers_everywhere():
    for call in (
        lambda: perfmodel.analyze("llama-3-8b", "h100", context_len=1000, pp=3),
        lambda: perfmodel.sweep("llama-3-8b", "h100", context_len=[1000], pp=3),
        lambda: Deployment.make("llama-3-8b", "h100", pp=3),
    ):
        with pytest.raises(InvalidInputError, match="pp=3 does not divide the 32 layers"):
            call()
    Deployment.make("llama-3-8b", "h100", pp=4)


def test_zero_output_tokens_allowed_everywhere():
    perfmodel.analyze("llama-3-8b", "h100", context_len=1000, output_tokens=0)
    assert (
        perfmodel.sweep("llama-3-8b", "h100", context_len=[1000], output_tokens=[0])["decode_s"].iloc[0] == 0
    )
    validate_scenario(perfmodel.load_model("llama-3-8b"), 1000, 0)


def test_bad_mode_is_invalid_input_naming_the_choices():
    for call in (
        lambda: perfmodel.analyze("llama-3-8b", "h100", mode="fast"),
        lambda: perfmodel.sweep("llama-3-8b", "h100", mode="fast"),
        lambda: Deployment.make("llama-3-8b", "h100", mode="fast"),
        lambda: check_mode("fast"),
    ):
        with pytest.raises(InvalidInputError, match="peak, calibrated"):
            call()


BASE = {
    "analyze": ["analyze", "--model", "llama-3-8b", "--gpu", "h100"],
    "sweep": ["sweep", "--model", "llama-3-8b", "--gpu", "h100"],
    "simulate": ["simulate", "--model", "llama-3-8b", "--gpu", "h100", "--requests", "3"],
}
CTX = {"analyze": "--context", "sweep": "--context", "simulate": "--prompt-len"}
OUT = {"analyze": "--output-tokens", "sweep": "--output-tokens", "simulate": "--output-len"}


@pytest.mark.parametrize("cmd", ["analyze", "sweep", "simulate"])
def test_cli_rules_agree(perfmodel_cli, cmd):
    r = perfmodel_cli(*BASE[cmd], CTX[cmd], "9000", OUT[cmd], "10")
    assert r.returncode == 0, r.stderr
    assert "trained window" in r.stdout + r.stderr
    r = perfmodel_cli(*BASE[cmd], CTX[cmd], "1000", "--pp", "3")
    assert r.returncode == 1 and "pp=3 does not divide" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    if cmd != "simulate":  # simulate draws output lengths >= 1 from --output-len
        r = perfmodel_cli(*BASE[cmd], CTX[cmd], "1000", OUT[cmd], "0")
        assert r.returncode == 0, r.stderr
