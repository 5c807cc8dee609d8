"""The dashboard launcher listens on localhost wherever it is started (checked on the arguments, no server)."""

import sys

import pytest

from perfmodel.dashboard import launch


def test_argv_names_localhost_and_the_app():
    argv = launch.streamlit_argv()
    assert argv[:3] == ["streamlit", "run", str(launch.APP)]
    assert argv[argv.index("--server.address") + 1] == "localhost"
    assert launch.APP.is_file()


def _capture(monkeypatch):
    stcli = pytest.importorskip("streamlit.web.cli")
    seen = {}

    def fake_main():
        seen["argv"] = list(sys.argv)

    monkeypatch.setattr(stcli, "main", fake_main)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    return seen


def test_launcher_from_another_directory(monkeypatch, tmp_path):
    seen = _capture(monkeypatch)
    monkeypatch.chdir(tmp_path)  # no .streamlit/config.toml here
    assert launch.main([]) == 0
    a = seen["argv"]
    assert a[1] == "run" and a[2] == str(launch.APP)
    assert a[a.index("--server.address") + 1] == "localhost"


def test_perfmodel_dashboard_subcommand(monkeypatch, tmp_path):
    from perfmodel.cli import main

    seen = _capture(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main(["dashboard", "--port", "8600"]) == 0
    a = seen["argv"]
    assert a[a.index("--server.address") + 1] == "localhost"
    assert a[a.index("--server.port") + 1] == "8600"


def test_explicit_address_is_passed_through(monkeypatch):
    from perfmodel.cli import main

    seen = _capture(monkeypatch)
    assert main(["dashboard", "--address", "0.0.0.0"]) == 0
    a = seen["argv"]
    assert a[a.index("--server.address") + 1] == "0.0.0.0"
