"""Plugin commands: ``tritonscale simulate`` is found through an entry point, never imported by
the service, and a missing plugin package is one clear line, not a traceback."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from adapter import cli


def test_simulate_is_a_registered_plugin_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.plugin_commands()["simulate"].value == "loadtest.simulator.cli:main"
    with pytest.raises(SystemExit) as exited:
        cli.main(["simulate", "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: tritonscale simulate")


def test_top_level_help_lists_plugin_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "simulate" in capsys.readouterr().out


def test_a_plugin_whose_package_is_not_installed_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ghost = EntryPoint(
        name="ghost", value="tritonscale_absent_pkg.cli:main", group=cli.PLUGIN_GROUP
    )
    monkeypatch.setattr(cli, "plugin_commands", lambda: {"ghost": ghost})
    assert cli.main(["ghost", "--help"]) == 2
    err = capsys.readouterr().err
    assert "tritonscale ghost needs the `sim` extra (tritonscale_absent_pkg is missing)" in err
    assert "Traceback" not in err
