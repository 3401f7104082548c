"""``tritonscale serve`` auth flags reach the config; an unusable kubeconfig exits 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapter.cli import main as cli_main
from adapter.config import load_config


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--requestheader-client-ca-file", "/ca.crt"],
            "requestheader_client_ca_file: only used with mode: delegated",
        ),
        (
            ["--auth-mode", "delegated", "--requestheader-allowed-names", "a,b"],
            "requestheader_allowed_names: only used with requestheader_client_ca_file",
        ),
    ],
)
def test_serve_flags_reach_the_auth_config(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["serve", "--target", "http://127.0.0.1:8002/metrics", *argv]) == 2
    assert message in capsys.readouterr().err


def test_serve_flags_build_the_auth_overrides() -> None:
    from adapter.cli import _overrides

    parser_args = _parse_serve(
        [
            "--auth-mode",
            "delegated",
            "--requestheader-client-ca-file",
            "/fp/ca.crt",
            "--requestheader-allowed-names",
            "front-proxy-client, aggregator",
            "--kubeconfig",
            "/kube/config",
        ]
    )
    auth = load_config(None, _overrides(parser_args)).auth
    assert (auth.mode, auth.requestheader_client_ca_file, auth.kubeconfig) == (
        "delegated",
        "/fp/ca.crt",
        "/kube/config",
    )
    assert auth.requestheader_allowed_names == ("front-proxy-client", "aggregator")
    empty = load_config(
        None,
        _overrides(
            _parse_serve(
                [
                    "--auth-mode",
                    "delegated",
                    "--requestheader-client-ca-file",
                    "/fp/ca.crt",
                    "--requestheader-allowed-names",
                    "",
                ]
            )
        ),
    ).auth
    assert empty.requestheader_allowed_names == ()


def _parse_serve(argv: list[str]) -> Any:
    import argparse

    from adapter.cli import _serve_parser

    parser = argparse.ArgumentParser()
    _serve_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_serve_reports_an_unusable_kubernetes_config_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("adapter.logging_setup.configure_logging", lambda level, fmt: None)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    argv = ["serve", "--target", "http://127.0.0.1:8002/metrics", "--listen", "127.0.0.1:0"]
    argv += ["--auth-mode", "delegated", "--kubeconfig", str(tmp_path / "absent")]
    assert cli_main(argv) == 2
    error = capsys.readouterr().err
    assert "cannot configure the Kubernetes client" in error and "absent" in error
