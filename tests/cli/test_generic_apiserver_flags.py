"""The Go generic apiserver's flags: each one reaches its config setting, and does what it
does in Go (client certificates as users, separate kubeconfigs, no ConfigMap lookup,
always-allowed paths, TLS version and ciphers, the listen address)."""

from __future__ import annotations

import argparse
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from adapter.cli import _serve_parser, serve_config
from adapter.cli import main as cli_main
from adapter.config import Config
from adapter.service import running_service
from tests.support.auth_support import (
    PKI,
    TOKEN_USER,
    ClientCert,
    FakeKubeAPI,
    config_map_data,
    make_pki,
)

DISCOVERY = "/apis/external.metrics.k8s.io/v1beta1"
TARGET = ["--target", "http://127.0.0.1:8002/metrics"]


def parse_serve(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    _serve_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def config_of(argv: list[str]) -> Config:
    return serve_config(parse_serve(argv))


DELEGATED = ["--auth-mode", "delegated"]
DELEGATED_FP = [*DELEGATED, "--requestheader-client-ca-file", "/fp.crt"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def kube_api(pki: PKI) -> AsyncIterator[FakeKubeAPI]:
    api = FakeKubeAPI(config_map_data=config_map_data(pki))
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


@pytest.mark.parametrize(
    ("argv", "setting", "expected"),
    [
        (["--secure-port", "7443"], lambda c: c.listen, "0.0.0.0:7443"),
        (["--bind-address", "127.0.0.1"], lambda c: c.listen, "127.0.0.1:6443"),
        (["--bind-address", "::1", "--secure-port", "0"], lambda c: c.listen, "[::1]:0"),
        (["--tls-min-version", "VersionTLS13"], lambda c: c.tls.min_version, "VersionTLS13"),
        (
            [
                "--tls-cipher-suites",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256",
            ],
            lambda c: c.tls.cipher_suites,
            ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"),
        ),
        ([*DELEGATED, "--client-ca-file", "/ca.crt"], lambda c: c.auth.client_ca_file, "/ca.crt"),
        (
            [*DELEGATED_FP, "--requestheader-username-headers", "X-Remote-User,X-Proxy-User"],
            lambda c: c.auth.requestheader_username_headers,
            ("X-Remote-User", "X-Proxy-User"),
        ),
        (
            [*DELEGATED_FP, "--requestheader-group-headers", "X-Proxy-Group"],
            lambda c: c.auth.requestheader_group_headers,
            ("X-Proxy-Group",),
        ),
        (
            [*DELEGATED_FP, "--requestheader-extra-headers-prefix", "X-Proxy-Extra-"],
            lambda c: c.auth.requestheader_extra_headers_prefix,
            ("X-Proxy-Extra-",),
        ),
        (
            [*DELEGATED, "--authentication-kubeconfig", "/authn"],
            lambda c: c.auth.authentication_kubeconfig,
            "/authn",
        ),
        (
            [*DELEGATED, "--authorization-kubeconfig", "/authz"],
            lambda c: c.auth.authorization_kubeconfig,
            "/authz",
        ),
        (
            [*DELEGATED, "--authentication-skip-lookup"],
            lambda c: c.auth.authentication_skip_lookup,
            True,
        ),
        (
            [*DELEGATED, "--authentication-skip-lookup=false"],
            lambda c: c.auth.authentication_skip_lookup,
            False,
        ),
        (
            ["--authorization-always-allow-paths", "/healthz,/metrics"],
            lambda c: c.auth.always_allow_paths,
            ("/healthz", "/metrics"),
        ),
    ],
)
def test_each_flag_reaches_its_setting(
    argv: list[str], setting: Callable[[Config], Any], expected: object
) -> None:
    assert setting(config_of(argv)) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--listen", "127.0.0.1:1", "--secure-port", "2"], "give one or the other"),
        (["--tls-min-version", "VersionTLS11"], "invalid choice"),
        (["--tls-cipher-suites", "TLS_RSA_WITH_RC4_128_SHA"], "insecure cipher suites"),
        (["--tls-cipher-suites", "TLS_AES_128_GCM_SHA256"], "TLS 1.3 suites only"),
        (["--client-ca-file", "/ca.crt"], "client_ca_file: only used with mode: delegated"),
        (["--authentication-skip-lookup=maybe"], "is not true or false"),
    ],
)
def test_bad_flags_exit_2_naming_what_to_fix(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = cli_main(["serve", *TARGET, *argv])
    except SystemExit as exit_:  # argparse refuses a value
        code = int(exit_.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err


# --- behaviour -------------------------------------------------------------------------------


def _client(cert: ClientCert | None = None, **tls: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for name, value in tls.items():
        setattr(context, name, value)
    if cert is not None:
        context.load_cert_chain(cert.cert_file, cert.key_file)
    return context


async def _get(
    port: int,
    context: ssl.SSLContext,
    path: str = DISCOVERY,
    headers: dict[str, str] | None = None,
) -> int:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(f"https://127.0.0.1:{port}{path}", headers=headers or {}) as response,
    ):
        return response.status


def _issue(ca: trustme.CA, directory: Path, name: str, **names: str) -> ClientCert:
    leaf = ca.issue_cert(**names)  # type: ignore[arg-type]
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(leaf.cert_chain_pems[0].bytes())
    key_file.write_bytes(leaf.private_key_pem.bytes())
    return ClientCert(cert_file, key_file)


async def test_request_header_and_client_ca_flags_authenticate_as_go_does(
    pki: PKI, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    fp_ca_file = tmp_path / "front-proxy-ca.crt"
    fp_ca_file.write_text(pki.front_proxy_ca_pem)
    client_ca = trustme.CA()
    (tmp_path / "client-ca.crt").write_bytes(client_ca.cert_pem.bytes())
    bob = _issue(client_ca, tmp_path, "bob", common_name="bob", organization_name="ops")
    argv = [*DELEGATED, "--listen", "127.0.0.1:0"]
    argv += ["--kubeconfig", str(kube_api.write_kubeconfig(tmp_path / "kubeconfig"))]
    argv += ["--requestheader-client-ca-file", str(fp_ca_file)]
    argv += ["--requestheader-allowed-names", "front-proxy-client"]
    argv += ["--requestheader-username-headers", "X-Proxy-User"]
    argv += ["--requestheader-group-headers", "X-Proxy-Group"]
    argv += ["--requestheader-extra-headers-prefix", "X-Proxy-Extra-"]
    argv += ["--client-ca-file", str(tmp_path / "client-ca.crt")]
    async with running_service(config_of(argv)) as service:
        proxy = _client(pki.front_proxy)
        headers = {
            "X-Proxy-User": "carol",
            "X-Proxy-Group": "devs",
            "X-Proxy-Extra-Scopes": "read",
            "X-Remote-User": "not-this-one",
        }
        assert await _get(service.port, proxy, headers=headers) == 200
        assert await _get(service.port, _client(bob)) == 200
    specs = [body["spec"] for body in kube_api.bodies(SAR_PATH)]
    assert [spec["user"] for spec in specs] == ["carol", "bob"]
    assert specs[0]["groups"] == ["devs", "system:authenticated"]
    assert specs[0]["extra"] == {"scopes": ["read"]}
    assert specs[1]["groups"] == ["ops", "system:authenticated"]


SAR_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


async def test_authentication_and_authorization_kubeconfigs_reach_different_servers(
    pki: PKI, tmp_path: Path
) -> None:
    authn = FakeKubeAPI(config_map_data=config_map_data(pki))
    authz = FakeKubeAPI(config_map_data=None)  # would fail the start if asked for it
    authn.tokens["good-token"] = {"username": TOKEN_USER.name, "groups": ["monitoring"]}
    await authn.start()
    await authz.start()
    try:
        argv = [*DELEGATED, "--listen", "127.0.0.1:0"]
        argv += ["--authentication-kubeconfig", str(authn.write_kubeconfig(tmp_path / "a"))]
        argv += ["--authorization-kubeconfig", str(authz.write_kubeconfig(tmp_path / "z"))]
        async with running_service(config_of(argv)) as service:
            headers = {"Authorization": "Bearer good-token"}
            assert await _get(service.port, _client(), headers=headers) == 200
    finally:
        await authn.stop()
        await authz.stop()
    assert len(authn.bodies(TOKEN_REVIEW_PATH)) == 1 and authn.bodies(SAR_PATH) == []
    assert [body["spec"]["user"] for body in authz.bodies(SAR_PATH)] == [TOKEN_USER.name]
    assert authz.bodies(TOKEN_REVIEW_PATH) == []


async def test_skip_lookup_starts_without_the_config_map_and_ignores_proxy_headers(
    pki: PKI, tmp_path: Path
) -> None:
    api = FakeKubeAPI(config_map_data=None)  # reading it would be a 404: a fatal start
    await api.start()
    try:
        argv = [*DELEGATED, "--listen", "127.0.0.1:0", "--authentication-skip-lookup"]
        argv += ["--kubeconfig", str(api.write_kubeconfig(tmp_path / "kubeconfig"))]
        async with running_service(config_of(argv)) as service:
            spoof = {"X-Remote-User": "admin", "X-Remote-Group": "system:masters"}
            assert await _get(service.port, _client(pki.front_proxy), headers=spoof) == 200
    finally:
        await api.stop()
    assert [path for path, _ in api.received].count(
        "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
    ) == 0
    assert [body["spec"]["user"] for body in api.bodies(SAR_PATH)] == ["system:anonymous"]


async def test_always_allow_paths_skip_the_review(kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    kube_api.decide = lambda spec: (False, "nobody")
    argv = [*DELEGATED, "--listen", "127.0.0.1:0"]
    argv += ["--kubeconfig", str(kube_api.write_kubeconfig(tmp_path / "kubeconfig"))]
    argv += ["--authorization-always-allow-paths", "/healthz,/metrics"]
    async with running_service(config_of(argv)) as service:
        assert await _get(service.port, _client(), "/metrics") == 200
        assert await _get(service.port, _client(), "/healthz") == 200
        assert await _get(service.port, _client(), "/readyz") == 403  # no longer listed
    assert [
        body["spec"]["nonResourceAttributes"]["path"] for body in kube_api.bodies(SAR_PATH)
    ] == ["/readyz"]


async def test_tls_min_version_refuses_older_clients() -> None:
    argv = ["--listen", "127.0.0.1:0", "--tls-min-version", "VersionTLS13"]
    async with running_service(config_of(argv)) as service:
        assert await _get(service.port, _client(minimum_version=ssl.TLSVersion.TLSv1_3)) == 200
        with pytest.raises(aiohttp.ClientError):
            await _get(service.port, _client(maximum_version=ssl.TLSVersion.TLSv1_2))


async def test_tls_cipher_suites_limit_tls12() -> None:
    # the self-signed certificate is ECDSA: ECDHE-ECDSA suites
    argv = ["--listen", "127.0.0.1:0"]
    argv += ["--tls-cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]
    async with running_service(config_of(argv)) as service:
        allowed = _client(maximum_version=ssl.TLSVersion.TLSv1_2)
        allowed.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
        assert await _get(service.port, allowed) == 200
        other = _client(maximum_version=ssl.TLSVersion.TLSv1_2)
        other.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        with pytest.raises(aiohttp.ClientError):
            await _get(service.port, other)
        # TLS 1.3 suites are not configurable, as in Go
        assert await _get(service.port, _client(minimum_version=ssl.TLSVersion.TLSv1_3)) == 200


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_secure_port_and_bind_address_are_where_it_listens() -> None:
    port = _free_port()
    argv = ["--bind-address", "127.0.0.1", "--secure-port", str(port)]
    async with running_service(config_of(argv)) as service:
        assert service.port == port
        assert await _get(port, _client(), "/healthz") == 200
