"""Support for the delegated-auth tests: real certificates (trustme), a fake ReviewClient, and an
in-process fake Kubernetes API that speaks the real TokenReview / SubjectAccessReview /
ConfigMap wire format and records what it received."""

from __future__ import annotations

import datetime
import json
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import trustme
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from multidict import CIMultiDict

from adapter.api.auth import USER_KEY
from adapter.api.tls import bound_port, make_server_ssl_context, start_server
from adapter.kube.reviews import (
    AccessDecision,
    RequestAttributes,
    RequestHeaderConfig,
    ReviewError,
    TokenReviewResult,
    UserInfo,
)
from tests.support.api_support import FakeClock, status_body

FRONT_PROXY_CN = "front-proxy-client"
HPA_USER = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
HPA_GROUPS = (
    "system:serviceaccounts",
    "system:serviceaccounts:kube-system",
    "system:authenticated",
)
ADAPTER_TOKEN = "adapter-service-account-token"
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"  # kube-apiserver --api-audiences


@dataclass(frozen=True)
class ClientCert:
    """A client certificate and key as files (what an ``ssl`` client context loads)."""

    cert_file: Path
    key_file: Path

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_file.read_bytes())


@dataclass(frozen=True)
class PKI:
    """Every certificate the tests use, written under one directory.

    - ``front_proxy_ca``: the request-header CA; ``front_proxy`` (CN front-proxy-client,
      EKU clientAuth) is what the aggregator presents; ``wrong_cn`` is from the same CA with
      a CN that is not allowed; ``server_auth_only`` has EKU serverAuth only;
    - ``stranger``: CN front-proxy-client, issued by an unrelated CA;
    - ``serving_ca`` issued the adapter's and the fake API server's certificates (127.0.0.1).
    """

    front_proxy_ca_pem: str
    front_proxy: ClientCert
    wrong_cn: ClientCert
    server_auth_only: ClientCert
    stranger: ClientCert
    serving_ca_file: Path
    serving_cert_file: Path
    serving_key_file: Path


def _leaf_files(leaf: trustme.LeafCert, directory: Path, name: str) -> ClientCert:
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key_file.write_bytes(leaf.private_key_pem.bytes())
    return ClientCert(cert_file, key_file)


def _server_auth_only(ca: trustme.CA, directory: Path) -> ClientCert:
    """CN front-proxy-client from the front-proxy CA, but EKU serverAuth only."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FRONT_PROXY_CN)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server-auth-only.crt", directory / "server-auth-only.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ClientCert(cert_file, key_file)


def make_pki(directory: Path) -> PKI:
    front_proxy_ca = trustme.CA()
    stranger_ca = trustme.CA()
    serving_ca = trustme.CA()
    serving = _leaf_files(serving_ca.issue_cert("127.0.0.1", "localhost"), directory, "serving")
    serving_ca_file = directory / "serving-ca.crt"
    serving_ca.cert_pem.write_to_path(str(serving_ca_file))
    return PKI(
        front_proxy_ca_pem=front_proxy_ca.cert_pem.bytes().decode(),
        front_proxy=_leaf_files(
            front_proxy_ca.issue_cert(common_name=FRONT_PROXY_CN), directory, "front-proxy"
        ),
        wrong_cn=_leaf_files(
            front_proxy_ca.issue_cert(common_name="not-the-aggregator"), directory, "wrong-cn"
        ),
        server_auth_only=_server_auth_only(front_proxy_ca, directory),
        stranger=_leaf_files(
            stranger_ca.issue_cert(common_name=FRONT_PROXY_CN), directory, "stranger"
        ),
        serving_ca_file=serving_ca_file,
        serving_cert_file=serving.cert_file,
        serving_key_file=serving.key_file,
    )


def client_context(pki: PKI, cert: ClientCert | None) -> ssl.SSLContext:
    """Trusts the serving CA (as an APIService caBundle); presents ``cert`` if given."""
    context = ssl.create_default_context(cafile=str(pki.serving_ca_file))
    if cert is not None:
        context.load_cert_chain(cert.cert_file, cert.key_file)
    return context


# --- a ReviewClient that answers from tables and records the calls --------------------------


def allow_all(_: RequestAttributes) -> AccessDecision:
    return AccessDecision(True)


@dataclass
class FakeReviews:
    decide: Callable[[RequestAttributes], AccessDecision] = allow_all
    users: dict[str, UserInfo] = field(default_factory=dict)  # token -> user
    access_error: str | None = None
    token_error: str | None = None
    access_calls: list[RequestAttributes] = field(default_factory=list)
    token_calls: list[str] = field(default_factory=list)

    async def review_token(self, token: str) -> TokenReviewResult:
        self.token_calls.append(token)
        if self.token_error is not None:
            raise ReviewError(self.token_error)
        user = self.users.get(token)
        return TokenReviewResult(user, "" if user else "token not recognised")

    async def review_access(self, attributes: RequestAttributes) -> AccessDecision:
        self.access_calls.append(attributes)
        if self.access_error is not None:
            raise ReviewError(self.access_error)
        return self.decide(attributes)


# --- a fake Kubernetes API server ------------------------------------------------------------

SAR_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
CONFIG_MAP_PATH = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"


def allow_spec(spec: dict[str, Any]) -> tuple[bool, str]:
    return True, "allowed by the fake"


@dataclass
class FakeKubeAPI:
    """Answers as the kube-apiserver does; ``received`` is ``(path, JSON body)`` per call and
    ``credentials`` the Authorization header of each call."""

    config_map_data: dict[str, str] | None = None
    config_map_version: int = 1
    decide: Callable[[dict[str, Any]], tuple[bool, str]] = allow_spec
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)  # token -> status.user
    # token -> its audience claim; a token not listed is for the API server's own audiences
    # (what TokenRequest without audiences, e.g. KEDA's, and pods' default tokens get)
    token_audiences: dict[str, tuple[str, ...]] = field(default_factory=dict)
    api_audiences: tuple[str, ...] = (API_AUDIENCE,)
    status_audiences_override: list[str] | None = None  # an API server answering otherwise
    sar_http_status: int = 201
    sar_status_override: dict[str, Any] | None = None
    received: list[tuple[str, Any]] = field(default_factory=list)
    credentials: list[str | None] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    def update_config_map(self, data: dict[str, str]) -> None:
        """Write the ConfigMap as the kube-apiserver does: new data, new resourceVersion."""
        self.config_map_data = data
        self.config_map_version += 1

    def bodies(self, path: str) -> list[Any]:
        return [body for received_path, body in self.received if received_path == path]

    async def _subject_access_review(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        if self.sar_http_status >= 400:
            return _status_error(self.sar_http_status, "InternalError", "etcd is on fire")
        allowed, reason = self.decide(body["spec"])
        result: dict[str, Any] = {"allowed": allowed, "reason": reason}
        if self.sar_status_override is not None:
            result = self.sar_status_override
        return web.json_response({**body, "status": result}, status=201)

    async def _token_review(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        token = body["spec"]["token"]
        user = self.tokens.get(token)
        # as kube-apiserver: the requested audiences, else its own; the token must be for one
        wanted = body["spec"].get("audiences") or list(self.api_audiences)
        claim = self.token_audiences.get(token, self.api_audiences)
        granted = [audience for audience in wanted if audience in claim]
        result: dict[str, Any]
        if user is None:
            result = {"authenticated": False, "error": "invalid token"}
        elif not granted:
            result = {
                "authenticated": False,
                "error": f"token audiences {list(claim)} is invalid for the target audiences "
                f"{wanted}",
            }
        else:
            audiences = self.status_audiences_override
            result = {"authenticated": True, "user": user, "audiences": audiences or granted}
        return web.json_response({**body, "status": result}, status=201)

    async def _config_map(self, request: web.Request) -> web.Response:
        self.received.append((request.path, None))
        self.credentials.append(request.headers.get("Authorization"))
        if self.config_map_data is None:
            return _status_error(
                404, "NotFound", 'configmaps "extension-apiserver-authentication" not found'
            )
        return web.json_response(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "extension-apiserver-authentication",
                    "namespace": "kube-system",
                    "resourceVersion": str(self.config_map_version),
                },
                "data": self.config_map_data,
            }
        )

    async def _record(self, request: web.Request) -> Any:
        body = json.loads(await request.read())
        self.received.append((request.path, body))
        self.credentials.append(request.headers.get("Authorization"))
        return body

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        """Serve on 127.0.0.1; returns the base URL."""
        app = web.Application()
        app.router.add_post(SAR_PATH, self._subject_access_review)
        app.router.add_post(TOKEN_REVIEW_PATH, self._token_review)
        app.router.add_get(CONFIG_MAP_PATH, self._config_map)
        self.runner = await start_server(app, "127.0.0.1:0", ssl_context)
        self.port = bound_port(self.runner)
        scheme = "https" if ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def write_kubeconfig(self, path: Path, token: str = ADAPTER_TOKEN) -> Path:
        """A kubeconfig for this server (plain HTTP) authenticating with ``token``."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "adapter", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "adapter"}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path


def _status_error(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(status_body(code, reason, message), status=code)


def config_map_data(pki: PKI, allowed_names: list[str] | None = None) -> dict[str, str]:
    """``extension-apiserver-authentication`` as the kube-apiserver writes it."""
    return {
        "client-ca-file": "(the cluster client CA; not used by the adapter)",
        "requestheader-client-ca-file": pki.front_proxy_ca_pem,
        "requestheader-allowed-names": json.dumps(
            [FRONT_PROXY_CN] if allowed_names is None else allowed_names
        ),
        "requestheader-username-headers": '["X-Remote-User"]',
        "requestheader-group-headers": '["X-Remote-Group"]',
        "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
    }


# --- shared by the auth tests (tests/auth) -------------------------------------------------

GROUP = "external.metrics.k8s.io"
GV = f"/apis/{GROUP}/v1beta1"
METRIC_PATH = f"{GV}/namespaces/prod/triton_queue_depth"
CACHE_SECONDS = 10.0

HPA_HEADERS = CIMultiDict(
    [
        ("X-Remote-User", HPA_USER),
        *[("X-Remote-Group", group) for group in HPA_GROUPS],
        ("X-Remote-Extra-Authentication.kubernetes.io%2fcredential-id", "JTI=1234"),
    ]
)
SPOOFED_HEADERS = CIMultiDict([("X-Remote-User", "admin"), ("X-Remote-Group", "system:masters")])
TOKEN_USER = UserInfo.create(
    "system:serviceaccount:monitoring:prometheus",
    uid="b0c1",
    groups=["system:serviceaccounts", "system:serviceaccounts:monitoring"],
)


def front_proxy_config(
    pki: PKI, allowed: tuple[str, ...] = (FRONT_PROXY_CN,)
) -> RequestHeaderConfig:
    return RequestHeaderConfig(pki.front_proxy_ca_pem, allowed_names=allowed, source="test CA")


@dataclass
class Answer:
    status: int
    body: Any
    content_type: str


@dataclass
class Served:
    """The API app with delegated auth, on 127.0.0.1 over TLS."""

    pki: PKI
    url: str
    reviews: FakeReviews
    cache_clock: FakeClock

    async def get(
        self,
        path: str,
        *,
        cert: ClientCert | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        method: str = "GET",
    ) -> Answer:
        sent = CIMultiDict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        connector = aiohttp.TCPConnector(ssl=client_context(self.pki, cert))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(method, self.url + path, headers=sent) as response,
        ):
            text = await response.text()
            content_type = response.headers.get("Content-Type", "")
            body = json.loads(text) if content_type.startswith("application/json") else text
            return Answer(response.status, body, content_type)


async def serve_app(app: web.Application, pki: PKI, client_ca_pem: str | None) -> web.AppRunner:
    context = make_server_ssl_context(
        str(pki.serving_cert_file),
        str(pki.serving_key_file),
        hostnames=[],
        client_ca_data=client_ca_pem,
    )
    return await start_server(app, "127.0.0.1:0", context)


async def echo_identity(request: web.Request) -> web.Response:
    """What a handler sees: the user and any identity header left on the request."""
    leaked = {
        name: value
        for name, value in request.headers.items()
        if name.lower().startswith("x-remote-") or name.lower() == "authorization"
    }
    user = request.get(USER_KEY)
    return web.json_response({"user": user.name if user else None, "headers": leaked})


HPA_INFO = UserInfo.create(
    HPA_USER,
    uid="7f1c",
    groups=HPA_GROUPS,
    extra={"authentication.kubernetes.io/credential-id": ["JTI=1234"]},
)
UNAUTHORIZED = status_body(401, "Unauthorized", "Unauthorized")
