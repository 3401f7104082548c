"""The front-proxy CA and the client CA rotate without a restart.

The cluster rewrites ``kube-system/extension-apiserver-authentication`` (old CA, then old and
new, then new only) while the aggregator's connections stay open; a client CA file is
swapped as the kubelet swaps a Secret volume. A certificate from a new CA is accepted once
it is published and never fails after; one from a removed CA is refused, on new connections
(the handshake) and on open keep-alive connections (the next request, 401), as the Go
servers' per-request verification does.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import trustme

from adapter.config import Config, load_config
from adapter.service import running_service
from tests.support.auth_support import (
    FRONT_PROXY_CN,
    HPA_USER,
    PKI,
    ClientCert,
    FakeKubeAPI,
    config_map_data,
)
from tests.support.helpers import async_wait_until
from tests.support.rotation_support import LiveClient, SecretVolume

DEADLINE = 60.0
DISCOVERY = "/apis/external.metrics.k8s.io/v1beta1"
AGGREGATOR_HEADERS = {"X-Remote-User": HPA_USER, "X-Remote-Group": "system:authenticated"}


def _client_context(cert: ClientCert) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the adapter's certificate is self-signed here
    context.load_cert_chain(cert.cert_file, cert.key_file)
    return context


def _issue(ca: trustme.CA, directory: Path, name: str, **names: str) -> ClientCert:
    leaf = ca.issue_cert(**names)  # type: ignore[arg-type]
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(leaf.cert_chain_pems[0].bytes())
    key_file.write_bytes(leaf.private_key_pem.bytes())
    return ClientCert(cert_file, key_file)


async def _over_new_connection(
    port: int, context: ssl.SSLContext, headers: Mapping[str, str]
) -> str:
    """The status code of one request on a new connection, or ``refused`` when the TLS
    handshake (or the connection right after it) is refused."""
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.get(f"https://127.0.0.1:{port}{DISCOVERY}", headers=headers) as response,
        ):
            return str(response.status)
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError):
        return "refused"


def _delegated_config(kubeconfig: Path, **auth: object) -> Config:
    return load_config(
        None,
        {
            "listen": "127.0.0.1:0",
            "tls": {"reload_interval_seconds": 0.05},
            "auth": {
                "mode": "delegated",
                "kubeconfig": str(kubeconfig),
                "config_map_poll_seconds": 0.05,
                **auth,
            },
        },
    )


async def test_front_proxy_ca_rotation_through_the_config_map(
    pki: PKI, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    kube_api.decide = lambda spec: (spec["user"] == HPA_USER, "allowed for the HPA only")
    new_ca = trustme.CA()
    new_front_proxy = _issue(new_ca, tmp_path, "new-front-proxy", common_name=FRONT_PROXY_CN)
    old_context = _client_context(pki.front_proxy)
    new_context = _client_context(new_front_proxy)
    new_ca_pem = new_ca.cert_pem.bytes().decode()
    config = _delegated_config(kube_api.write_kubeconfig(tmp_path / "kubeconfig"))
    async with running_service(config) as service:
        port = service.port
        assert await _over_new_connection(port, old_context, AGGREGATOR_HEADERS) == "200"
        assert await _over_new_connection(port, new_context, AGGREGATOR_HEADERS) == "refused"
        old_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=old_context))
        try:
            url = f"https://127.0.0.1:{port}{DISCOVERY}"

            async def over_old_keepalive() -> int:
                async with old_session.get(url, headers=AGGREGATOR_HEADERS) as response:
                    return response.status

            assert await over_old_keepalive() == 200

            # 1. the cluster publishes both CAs (the overlap of a rotation)
            both = config_map_data(pki)
            both["requestheader-client-ca-file"] = pki.front_proxy_ca_pem + new_ca_pem
            kube_api.update_config_map(both)

            async def new_ca_accepted() -> bool:
                status = await _over_new_connection(port, new_context, AGGREGATOR_HEADERS)
                return status == "200"

            await async_wait_until(new_ca_accepted, DEADLINE, 0.05, "the new CA accepted")
            assert await over_old_keepalive() == 200
            live = LiveClient(port, DISCOVERY, new_context, AGGREGATOR_HEADERS)
            async with live.running():
                await async_wait_until(
                    lambda: live.keepalive_answers > 10 and len(live.new_connection_serials) > 3,
                    DEADLINE,
                    message="the new CA's client served",
                )

                # 2. the old CA is removed
                only_new = config_map_data(pki)
                only_new["requestheader-client-ca-file"] = new_ca_pem
                kube_api.update_config_map(only_new)

                async def old_ca_refused() -> bool:
                    status = await _over_new_connection(port, old_context, AGGREGATOR_HEADERS)
                    return status == "refused"

                await async_wait_until(old_ca_refused, DEADLINE, 0.05, "the old CA refused")
                # the connection opened under the old CA is judged by the current one
                assert await over_old_keepalive() == 401
                answers, connections = live.keepalive_answers, len(live.new_connection_serials)
                await async_wait_until(
                    lambda: (
                        live.keepalive_answers > answers + 10
                        and len(live.new_connection_serials) > connections + 3
                    ),
                    DEADLINE,
                    message="the new CA's client served after the removal",
                )
            assert live.failures == []
            assert live.keepalive_connections_opened == 1
        finally:
            await old_session.close()


async def test_client_ca_rotation_from_a_secret_volume(
    pki: PKI, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    """``auth.client_ca_file`` (Go's --client-ca-file): user = CN, groups = O, and a swap of
    the mounted CA moves trust from the old CA to the new one."""
    old_ca, new_ca = trustme.CA(), trustme.CA()
    names = {"common_name": "alice", "organization_name": "platform-team"}
    old_user = _issue(old_ca, tmp_path, "alice-old", **names)
    new_user = _issue(new_ca, tmp_path, "alice-new", **names)
    volume = SecretVolume(tmp_path / "client-ca", {"ca.crt": old_ca.cert_pem.bytes()})
    seen: list[tuple[str, list[str]]] = []

    def decide(spec: dict[str, object]) -> tuple[bool, str]:
        groups = spec.get("groups")
        seen.append((str(spec["user"]), list(groups) if isinstance(groups, list) else []))
        return spec["user"] == "alice", "alice may"

    kube_api.decide = decide
    config = _delegated_config(
        kube_api.write_kubeconfig(tmp_path / "kubeconfig"), client_ca_file=volume.path("ca.crt")
    )
    async with running_service(config) as service:
        port = service.port
        assert await _over_new_connection(port, _client_context(old_user), {}) == "200"
        assert seen[-1] == ("alice", ["platform-team", "system:authenticated"])
        assert await _over_new_connection(port, _client_context(new_user), {}) == "refused"
        volume.write({"ca.crt": new_ca.cert_pem.bytes()})

        async def rotated() -> bool:
            new = await _over_new_connection(port, _client_context(new_user), {})
            return new == "200"

        await async_wait_until(rotated, DEADLINE, 0.05, "the new client CA accepted")
        assert await _over_new_connection(port, _client_context(old_user), {}) == "refused"
        # the front proxy is unaffected (its CA comes from the ConfigMap): authenticated as
        # the HPA, then denied by the SubjectAccessReview, which allows only alice here
        front_proxy = _client_context(pki.front_proxy)
        assert await _over_new_connection(port, front_proxy, AGGREGATOR_HEADERS) == "403"
