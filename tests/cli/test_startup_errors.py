"""What stops ``serve`` at start is one line and exit 2; what check-config can see, it reports.

Busy port, missing or unusable TLS files, a kubeconfig that is not one: never a traceback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter.api.tls import generate_self_signed
from adapter.cli import main

TARGET = ["--target", "http://127.0.0.1:9/metrics"]


@pytest.fixture(autouse=True)
def _no_global_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("adapter.logging_setup.configure_logging", lambda level, fmt: None)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _serve_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["serve", "--listen", "127.0.0.1:0", *TARGET, *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("tritonscale serve:")]
    return line


def test_a_busy_port_is_one_line(busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    line = _serve_error(["--listen", f"127.0.0.1:{busy_port}"], capsys)
    assert f"cannot listen on 127.0.0.1:{busy_port}" in line
    assert "address already in use" in line


def test_missing_tls_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    line = _serve_error(["--tls-cert-file", str(cert), "--tls-private-key-file", str(key)], capsys)
    assert f"--tls-cert-file '{cert}' cannot be read" in line


def test_a_key_that_is_not_the_certificates_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, _ = generate_self_signed(["a"])
    _, other_key = generate_self_signed(["b"])
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(other_key)
    argv = ["--tls-cert-file", str(tmp_path / "tls.crt")]
    line = _serve_error([*argv, "--tls-private-key-file", str(tmp_path / "tls.key")], capsys)
    assert "cannot load the serving certificate" in line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"clusters: [\n", ":2 is not usable: ParserError", id="bad-yaml"),
        pytest.param(b"caf\xe9: 1\n", "is not usable: UnicodeDecodeError", id="not-utf-8"),
        pytest.param(b"[" * 5000, "is not usable", id="5000-deep"),
    ],
)
def test_an_unusable_kubeconfig_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_bytes(content)
    line = _serve_error(["--auth-mode", "delegated", "--kubeconfig", str(kubeconfig)], capsys)
    assert expected in line


def _check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = tmp_path / "tritonscale.yaml"
    config.write_text(text)
    code = main(["check-config", str(config)])
    return code, capsys.readouterr().err


def test_check_config_loads_the_tls_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = f"{tmp_path}/tritonscale.yaml"
    tls = f"tls: {{cert_file: {tmp_path}/c, private_key_file: {tmp_path}/k}}\n"
    # absent here (a Secret mounted in the pod, checked on a laptop): a note, not an error
    code, err = _check(tmp_path, tls, capsys)
    assert code == 0
    assert f"{config}: note: tls.cert_file '{tmp_path}/c' is not here" in err
    (tmp_path / "c").write_text("not a certificate")
    (tmp_path / "k").write_text("not a key")
    code, err = _check(tmp_path, tls, capsys)
    assert code == 1 and "cannot load certificate" in err
    cert, key = generate_self_signed([])
    (tmp_path / "c").write_bytes(cert)
    (tmp_path / "k").write_bytes(key)
    code, err = _check(tmp_path, tls, capsys)
    assert (code, err) == (0, "")


def test_check_config_reads_the_ca_and_kubeconfig_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    (tmp_path / "kubeconfig").write_text("users: []\n")
    (tmp_path / "scaler-ca.crt").write_bytes(b"\xff\xfe")
    text = (
        f"auth:\n  mode: delegated\n  requestheader_client_ca_file: {tmp_path}/ca.crt\n"
        f"  kubeconfig: {tmp_path}/kubeconfig\n"
        f"discovery:\n  kubeconfig: {tmp_path}/missing\n"
        f"keda_scaler:\n  listen: 127.0.0.1:0\n  client_ca_file: {tmp_path}/scaler-ca.crt\n"
    )
    code, err = _check(tmp_path, text, capsys)
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 4, err
    assert "auth.requestheader_client_ca_file" in lines[0]
    assert f"keda_scaler.client_ca_file '{tmp_path}/scaler-ca.crt': not a PEM" in lines[1]
    assert lines[2].endswith(
        f"auth.kubeconfig: {tmp_path}/kubeconfig is not a kubeconfig (no clusters)"
    )
    assert f"note: discovery.kubeconfig '{tmp_path}/missing' is not here" in lines[3]
