"""Typed, strict configuration: YAML file + command-line overrides.

The configuration is a leaf: it imports nothing of the service but Kubernetes vocabulary
(:mod:`adapter.kube`), the target kinds and the policies' own defaults, and every consumer
is handed only its own section (``Pipeline`` gets ``scrape`` and ``signals``, the predictive
stage ``predictive``, discovery its ``discovery`` entries, auth ``auth``). Each default is
written once: the predictive ones are :class:`policies.predictive.PredictiveSettings`'.

Unknown keys, wrong types and impossible values are errors, reported as
``FILE:LINE: field.path: what is wrong`` so the operator knows exactly what to fix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from adapter.config_yaml import read_yaml
from adapter.kube.reviews import (
    GO_DEFAULT_EXTRA_HEADERS_PREFIXES,
    GO_DEFAULT_GROUP_HEADERS,
    GO_DEFAULT_USERNAME_HEADERS,
)
from adapter.kube.selectors import Selector, SelectorError, label_key_problem
from adapter.kube.tls_names import GO_CIPHER_SUITES, cipher_suite_problem
from adapter.targets import TargetKind
from policies.forecast import FORECASTER_NAMES
from policies.predictive import SETTING_RANGES, PredictiveSettings, settings_default

_LABEL_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./")

DEFAULT_ALWAYS_ALLOW_PATHS = (
    "/healthz",
    "/healthz/*",
    "/livez",
    "/livez/*",
    "/readyz",
    "/readyz/*",
)
"""Go allows the three exact paths; the per-check subpaths (``/readyz/ping``) are added here
because they reveal nothing more than the endpoint itself."""

MIN_SCRAPE_INTERVAL_SECONDS = 0.1
"""No target is scraped more than 10 times a second."""

DEFAULT_METRICS_PORT = 8002
"""Triton's ``--metrics-port`` default."""

RESERVED_TARGET_LABELS = frozenset({"namespace", "deployment"})

UNSTABLE_POD_LABELS = frozenset(
    {
        "pod-template-hash",
        "controller-revision-hash",
        "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index",
        "batch.kubernetes.io/job-completion-index",
    }
)
"""Pod labels that differ between pods of one workload (or across a rollout): copying one
would split a Deployment into several groups."""

_SECRET_QUERY_KEY = re.compile(
    r"token|secret|passw|pwd|key|auth|sig|cred|session|jwt|bearer|cookie", re.IGNORECASE
)


def _secret(query_key: str) -> bool:
    """A query parameter whose name says it carries a credential (``?token=``, ``api_key``)."""
    return bool(_SECRET_QUERY_KEY.search(query_key))


_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS_NAME = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)


class ListenAddressError(ValueError):
    """``--listen`` is not ``HOST:PORT``."""


def parse_listen(listen: str) -> tuple[str | None, int]:
    """``HOST:PORT`` -> (host, port); ``[::1]:6443`` for IPv6; ``:6443`` = all interfaces."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ListenAddressError(
            f"listen address {listen!r} must be HOST:PORT (e.g. 0.0.0.0:6443 or [::]:6443)"
        )
    port = int(port_text)
    if port > 65535:
        raise ListenAddressError(f"listen address {listen!r}: port {port} is above 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ListenAddressError(
                f"listen address {listen!r}: {host!r} is not an IPv6 address"
            ) from exc
    elif ":" in host:
        raise ListenAddressError(
            f"listen address {listen!r}: write IPv6 hosts in brackets, e.g. [::1]:{port}"
        )
    return (host or None), port


class _Strict(BaseModel):
    # allow_inf_nan=False: .inf and .nan are never a setting (a bound alone lets NaN through)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TLSConfig(_Strict):
    """The serving certificate of the HTTPS API (and of KEDA's scaler), and its TLS settings."""

    cert_file: str | None = Field(
        None,
        description="PEM certificate (chain) served (--tls-cert-file), re-read when it "
        "changes; unset with private_key_file: a self-signed certificate made at start",
    )
    private_key_file: str | None = Field(
        None, description="PEM private key of cert_file (--tls-private-key-file)"
    )
    hostnames: tuple[str, ...] = Field(
        (),
        description="extra DNS names or IPs of the self-signed certificate, besides "
        "localhost, 127.0.0.1 and ::1 (e.g. tritonscale.tritonscale.svc)",
    )
    min_version: Literal["VersionTLS12", "VersionTLS13"] = Field(
        "VersionTLS12", description="lowest TLS version accepted (--tls-min-version)"
    )
    cipher_suites: tuple[str, ...] = Field(
        (),
        description="TLS 1.2 cipher suites by Go's (IANA) names (--tls-cipher-suites); TLS "
        "1.3 suites are not configurable, as in Go; empty: OpenSSL's defaults",
    )
    reload_interval_seconds: float = Field(
        10.0,
        ge=0.01,
        le=3600,
        description="how often the certificate, the key and every CA file are checked for "
        "changes; a change is served to new connections without a restart",
    )

    @field_validator("cipher_suites")
    @classmethod
    def _known_suites(cls, suites: tuple[str, ...]) -> tuple[str, ...]:
        for suite in suites:
            problem = cipher_suite_problem(suite)
            if problem is not None:
                raise ValueError(problem)
        return suites

    @field_validator("hostnames")
    @classmethod
    def _san_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                if len(name) > 253 or not _DNS_NAME.match(name):
                    raise ValueError(
                        f"{name[:100]!r} is neither a DNS name (e.g. tritonscale.tritonscale.svc) "
                        "nor an IP address"
                    ) from None
        return names

    @model_validator(mode="after")
    def _both_or_neither(self) -> TLSConfig:
        if (self.cert_file is None) != (self.private_key_file is None):
            raise ValueError("cert_file and private_key_file must be given together")
        if (
            self.cipher_suites
            and self.min_version == "VersionTLS12"
            and not any(suite in GO_CIPHER_SUITES for suite in self.cipher_suites)
        ):
            raise ValueError(
                "cipher_suites names TLS 1.3 suites only: TLS 1.2 clients could not connect "
                "(add TLS 1.2 suites, or set min_version: VersionTLS13)"
            )
        return self


class ServerConfig(_Strict):
    """What the HTTPS listener does with slow, idle and excess clients (README: "Limits").

    The Go apiserver's ReadHeaderTimeout is 32 s and its IdleTimeout 90 s; the aggregator, the
    kubelet and Prometheus send their headers at once, so 10 s is ample.
    """

    header_timeout_seconds: float = Field(
        10.0,
        ge=0.1,
        le=300,
        description="from accept, the TLS handshake and a request's headers must be done "
        "within this (after a response, counted from the next request's first byte)",
    )
    idle_timeout_seconds: float = Field(
        90.0,
        ge=1,
        le=3600,
        description="a keep-alive connection without a request for this long is closed (the "
        "Go servers' 90 s)",
    )
    max_connections: int = Field(
        256,
        ge=1,
        le=100_000,
        description="open connections, counted before TLS (each TLS connection holds a "
        "256 KiB read buffer); one more replaces the oldest that has waited a second without "
        "a request (or idle), else it is refused",
    )
    api_process: bool = Field(
        False,
        description="answer the metrics APIs on `listen` from a process of their own, fed "
        "every published snapshot, so scraping and serving do not share one core and one "
        'event loop (README: "The API in a process of its own"); the main process then '
        "serves the live page, explain and its /metrics on `main_listen`",
    )
    main_listen: str = Field(
        "0.0.0.0:6444",
        description="with api_process: HOST:PORT where the main process serves its full app "
        "(live page, explain, the scraping's /metrics, and the same APIs); unused otherwise",
    )

    @field_validator("main_listen")
    @classmethod
    def _main_host_port(cls, main_listen: str) -> str:
        parse_listen(main_listen)  # raises ListenAddressError (a ValueError) naming the problem
        return main_listen


class ScrapeConfig(_Strict):
    """How every target is scraped."""

    interval_seconds: float = Field(
        1.0,
        ge=MIN_SCRAPE_INTERVAL_SECONDS,
        le=300,
        description="how often each target is scraped: at most 10 times a second, at least "
        "every 5 minutes (a rate needs two readings)",
    )
    timeout_seconds: float = Field(
        0.8, ge=0.01, le=300, description="time allowed to fetch one /metrics, from 10 ms"
    )
    max_response_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="a /metrics body is read whole into memory: at most 256 MiB",
    )
    backoff_max_seconds: float = Field(
        5.0, ge=0.1, le=3600, description="longest wait between retries of a failing target"
    )
    max_series_per_target: int = Field(
        25_000,
        ge=1,
        le=10_000_000,
        description="series kept per scrape of one target (1,000 models of ~11 kept series, 2 "
        "versions, plus GPUs); a scrape over it fails whole, since dropping some would shrink "
        "group sums",
    )
    max_models_per_target: int = Field(
        1_000,
        ge=1,
        le=1_000_000,
        description="models per target; a scrape over it fails whole",
    )
    max_concurrent_scrapes: int = Field(
        100,
        ge=1,
        le=100_000,
        description="scrapes in flight at once; the others wait for a slot (the timeout counts "
        "from the start of each fetch), so when CPU is short the effective interval stretches "
        "(tritonscale_scrape_interval_stretch) instead of scrapes timing out",
    )

    @model_validator(mode="after")
    def _timeout_fits(self) -> ScrapeConfig:
        if self.timeout_seconds > self.interval_seconds * 10:
            raise ValueError("timeout_seconds should not exceed 10x interval_seconds")
        return self


class SignalsConfig(_Strict):
    """``max_age_seconds``: data older than this is answered with 503 (the HPA holds);
    ``forget_after_seconds``: a series without data for this long is dropped (404), so an
    operator has minutes to read why it is stale before it goes away."""

    rate_window_seconds: float = Field(
        5.0,
        ge=0.1,
        le=600,
        description="rates are counter deltas over this window (or the last two readings when "
        "they are further apart), up to 10 minutes",
    )
    max_age_seconds: float = Field(
        30.0,
        ge=0.2,
        le=86400,
        description="older values are not served (the HPA holds); at least twice every scrape "
        "interval, so one missed scrape does not make a value stale",
    )
    forget_after_seconds: float = Field(
        300.0,
        gt=0,
        le=86400,
        description="a series without data answers 503 'stale: last data N s ago from TARGET' "
        "this long, then is dropped (404); at least max_age_seconds",
    )
    sum_versions: bool = Field(
        True, description="sum a model's versions into one series; false: one per version"
    )
    member_failure_drop_seconds: float = Field(
        60.0,
        ge=1,
        le=86400,
        description="a group member without a usable scrape for this long leaves its group as "
        "if its pod had left, while another member is healthy; until then the group holds "
        "(README: targets that misbehave)",
    )

    @model_validator(mode="after")
    def _forget_after_max_age(self) -> SignalsConfig:
        if self.forget_after_seconds < self.max_age_seconds:
            raise ValueError(
                f"forget_after_seconds ({self.forget_after_seconds:g}) must be at least "
                f"max_age_seconds ({self.max_age_seconds:g})"
            )
        return self


def _label_keys_checked(labels: dict[str, str]) -> dict[str, str]:
    for key in labels:
        _check_label_key(key)
    return labels


PodLabels = Annotated[dict[str, str], AfterValidator(_label_keys_checked)]
"""Kubernetes labels of a pod (or of every pod of a group), each key checked as the API server
checks label keys."""


class TargetConfig(_Strict):
    """A static target: one Triton (or dcgm-exporter) /metrics endpoint."""

    url: str = Field(description="http(s) URL of the /metrics endpoint, without credentials")
    kind: TargetKind = Field("triton", description="triton or dcgm (dcgm-exporter)")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="labels of the target's series; targets with equal labels form one group "
        "(give namespace and deployment)",
    )
    scrape_interval_seconds: float | None = Field(
        None, ge=MIN_SCRAPE_INTERVAL_SECONDS, le=300, description="default: scrape.interval"
    )
    pod: str | None = Field(
        None, description="the pod this target scrapes (custom metrics: per-pod values)"
    )
    pod_labels: PodLabels = Field(
        default_factory=dict, description="that pod's labels (labelSelector over pods)"
    )

    @field_validator("pod")
    @classmethod
    def _pod_name(cls, name: str | None) -> str | None:
        if name is not None and not _DNS1123_SUBDOMAIN.match(name):
            raise ValueError(
                f"{name!r} is not a pod name (lowercase RFC 1123 subdomain: a-z, 0-9, '-' "
                "and '.', at most 253 characters)"
            )
        return name

    @model_validator(mode="after")
    def _pod_labels_need_pod(self) -> TargetConfig:
        if self.pod_labels and self.pod is None:
            raise ValueError("pod_labels: only used with pod (the pod these labels belong to)")
        return self

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
            raise ValueError(f"must be an http(s) URL with a host, got {shown!r}")
        # Target URLs appear in logs and metric labels: no credentials in them.
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry user:password@ credentials")
        secret = [key for key, _ in parse_qsl(parts.query, keep_blank_values=True) if _secret(key)]
        if secret:
            raise ValueError(
                f"must not carry credentials in its query ({', '.join(sorted(set(secret)))}): "
                "target URLs appear in logs and metric labels"
            )
        if parts.fragment:
            raise ValueError("must not have a #fragment (it is never sent to the target)")
        return url

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if not name or not set(name) <= _LABEL_NAME_CHARS:
                raise ValueError(f"label name {name!r} is not a valid Kubernetes label key")
        return labels


def _series_default(name: str) -> Any:
    return settings_default(name)


def _ranged(name: str, default: Any = None) -> Any:
    """A field with the limits (and their reason) of :data:`SETTING_RANGES`: one source."""
    allowed = SETTING_RANGES[name]
    return Field(default, ge=allowed.low, le=allowed.high, description=allowed.why)


class PredictiveSeriesConfig(_Strict):
    """One series' predictive settings; the defaults are :class:`PredictiveSettings`' own.

    The ranges here give precise errors; relations between settings (min <= max replicas, the
    horizon in steps) are checked by building the policy's settings, so the config accepts
    exactly what the policy accepts.
    """

    step_seconds: float = _ranged("step_seconds", _series_default("step_seconds"))
    cold_start_seconds: float = _ranged("cold_start_seconds", _series_default("cold_start_seconds"))
    hpa_sync_period_seconds: float = _ranged(
        "hpa_sync_period_seconds", _series_default("hpa_sync_period_seconds")
    )
    forecaster: str = Field(
        _series_default("forecaster"),
        description=f"arrival-rate forecaster: one of {', '.join(FORECASTER_NAMES)}",
    )
    slo_attainment: float = Field(
        _series_default("slo_attainment"),
        gt=0,
        lt=1,
        description="share of requests that must wait at most slo_seconds; the policy "
        "calibrates its utilisation and headroom to it",
    )
    slo_seconds: float = _ranged("slo_seconds", _series_default("slo_seconds"))
    capacity_rps: float | None = _ranged("capacity_rps", _series_default("capacity_rps"))
    min_replicas: int = _ranged("min_replicas", _series_default("min_replicas"))
    max_replicas: int = _ranged("max_replicas", _series_default("max_replicas"))
    scale_down_delay_seconds: float = _ranged(
        "scale_down_delay_seconds", _series_default("scale_down_delay_seconds")
    )
    panic_hold_seconds: float = _ranged("panic_hold_seconds", _series_default("panic_hold_seconds"))

    @field_validator("forecaster")
    @classmethod
    def _known_forecaster(cls, name: str) -> str:
        if name not in FORECASTER_NAMES:
            raise ValueError(f"unknown forecaster {name!r}; one of: {', '.join(FORECASTER_NAMES)}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> PredictiveSeriesConfig:
        self.settings()  # raises ValueError naming the setting
        return self

    def settings(self) -> PredictiveSettings:
        return PredictiveSettings(**self.model_dump())


_INHERITED = "as in predictive.defaults, for the matching series; unset: inherited"


class PredictiveOverride(_Strict):
    """Settings for the series whose labels include every ``match`` pair; unset: inherited."""

    match: dict[str, str] = Field(
        description="series labels (namespace, deployment, model) this entry applies to"
    )
    step_seconds: float | None = _ranged("step_seconds")
    cold_start_seconds: float | None = _ranged("cold_start_seconds")
    hpa_sync_period_seconds: float | None = _ranged("hpa_sync_period_seconds")
    forecaster: str | None = Field(None, description=_INHERITED)
    slo_attainment: float | None = Field(None, gt=0, lt=1, description=_INHERITED)
    slo_seconds: float | None = _ranged("slo_seconds")
    capacity_rps: float | None = _ranged("capacity_rps")
    min_replicas: int | None = _ranged("min_replicas")
    max_replicas: int | None = _ranged("max_replicas")
    scale_down_delay_seconds: float | None = _ranged("scale_down_delay_seconds")
    panic_hold_seconds: float | None = _ranged("panic_hold_seconds")


class PredictiveConfig(_Strict):
    """The ``predictive:`` section: ``defaults`` for every series, then ``series`` overrides."""

    defaults: PredictiveSeriesConfig = Field(
        PredictiveSeriesConfig(), description="settings of every series"
    )
    series: tuple[PredictiveOverride, ...] = Field(
        (), description="overrides, applied in order to the series whose labels they match"
    )
    warm_steps: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="steps with a known arrival rate after which a series' forecast is warm "
        "(a warm-started series counts its history); unset: the series' horizon in steps "
        "plus the 20 forecast errors its calibrated headroom needs",
    )
    readiness_max_wait_seconds: float = Field(
        480.0,
        ge=0,
        le=3600,
        description="/readyz waits until every series is warm, but at most this long after "
        "the service starts; keep it below the Deployment's progressDeadlineSeconds",
    )

    @model_validator(mode="after")
    def _overrides_valid(self) -> PredictiveConfig:
        for index, override in enumerate(self.series):
            try:
                self._merged(override.match)
            except ValueError as err:
                raise ValueError(f"series.{index} (match {override.match}): {err}") from None
        return self

    def _merged(self, labels: Mapping[str, str]) -> PredictiveSeriesConfig:
        merged = self.defaults.model_dump()
        for override in self.series:
            if all(labels.get(k) == v for k, v in override.match.items()):
                merged.update(
                    {
                        k: v
                        for k, v in override.model_dump().items()
                        if k != "match" and v is not None
                    }
                )
        try:
            return PredictiveSeriesConfig(**merged)
        except ValidationError as err:
            raise ValueError(
                "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            ) from None

    def for_series(self, labels: Mapping[str, str]) -> PredictiveSettings:
        """Defaults merged with every override whose ``match`` is a subset of ``labels``."""
        return self._merged(labels).settings()


class AuthConfig(_Strict):
    """Delegated authentication and authorisation (external-metrics-api-and-hpa.md §2).

    ``none``: no authentication at all (local use, tests). ``delegated``: front-proxy client
    certificates, bearer tokens via TokenReview, authorisation via SubjectAccessReview. Without
    ``requestheader_client_ca_file`` every ``requestheader_*`` setting is read from the
    ConfigMap ``kube-system/extension-apiserver-authentication`` at start.
    """

    mode: Literal["none", "delegated"] = Field(
        "none",
        description="delegated: authenticate and authorise as aggregated API servers do; "
        "none: no authentication (local runs, tests)",
    )
    requestheader_client_ca_file: str | None = Field(
        None,
        description="front-proxy CA (PEM), re-read when it changes; unset: every "
        "requestheader setting comes from the ConfigMap "
        "kube-system/extension-apiserver-authentication, re-read every "
        "config_map_poll_seconds",
    )
    requestheader_allowed_names: tuple[str, ...] = Field(
        (), description="front-proxy certificate CNs allowed; empty: any CN from the CA"
    )
    requestheader_username_headers: tuple[str, ...] = Field(
        GO_DEFAULT_USERNAME_HEADERS,
        min_length=1,
        description="headers holding the user name; the first non-empty one counts",
    )
    requestheader_group_headers: tuple[str, ...] = Field(
        GO_DEFAULT_GROUP_HEADERS, description="headers holding the groups (every value)"
    )
    requestheader_extra_headers_prefix: tuple[str, ...] = Field(
        GO_DEFAULT_EXTRA_HEADERS_PREFIXES,
        description="prefixes of the headers holding extra user information",
    )
    client_ca_file: str | None = Field(
        None,
        description="CA (PEM) of client certificates accepted from callers other than the "
        "front proxy: user = the certificate's CN, groups = its O values (Go's "
        "--client-ca-file); re-read when it changes; unset: no client-certificate users",
    )
    authentication_skip_lookup: bool = Field(
        False,
        description="do not read the ConfigMap kube-system/extension-apiserver-authentication; "
        "without requestheader_client_ca_file front-proxy authentication is then off (tokens "
        "and client certificates only)",
    )
    config_map_poll_seconds: float = Field(
        10.0,
        ge=0.01,
        le=3600,
        description="how often the ConfigMap extension-apiserver-authentication is re-read "
        "(only a new resourceVersion is parsed)",
    )
    authorization_cache_seconds: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="TokenReview and SubjectAccessReview answers are reused this long (Go's "
        "default 10 s); 0 asks every time, an hour at most keeps a revoked grant short-lived",
    )
    always_allow_paths: tuple[str, ...] = Field(
        DEFAULT_ALWAYS_ALLOW_PATHS,
        description="paths served without authorisation; a trailing * matches a prefix",
    )
    kubeconfig: str | None = Field(
        None,
        description="Kubernetes API for auth (and discovery, unless discovery.kubeconfig); "
        "unset: in-cluster, else $KUBECONFIG / ~/.kube/config",
    )
    authentication_kubeconfig: str | None = Field(
        None, description="Kubernetes API for TokenReview and the ConfigMap; unset: kubeconfig"
    )
    authorization_kubeconfig: str | None = Field(
        None, description="Kubernetes API for SubjectAccessReview; unset: kubeconfig"
    )
    review_timeout_seconds: float = Field(
        10.0,
        ge=0.1,
        le=60,
        description="one TokenReview or SubjectAccessReview call (Go's default 10 s); under "
        "0.1 s every review would fail, over a minute the aggregator has given up",
    )
    token_audiences: tuple[str, ...] = Field(
        (),
        description="audiences a bearer token must be for (sent in the TokenReview; the answer "
        "must name one of them); empty: the API server's own (--api-audiences), which "
        "kubectl create token, KEDA's boundServiceAccountToken and pods' default tokens carry",
    )

    @field_validator("token_audiences")
    @classmethod
    def _audiences(cls, audiences: tuple[str, ...]) -> tuple[str, ...]:
        for audience in audiences:
            if not audience.strip():
                raise ValueError("an audience must not be empty (leave the list empty instead)")
        return audiences

    @field_validator("always_allow_paths")
    @classmethod
    def _path_patterns(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            if not path.startswith("/") or "*" in path[:-1]:
                raise ValueError(
                    f"{path!r} must be an absolute path, optionally ending in * (prefix match)"
                )
        return paths

    @model_validator(mode="after")
    def _consistent(self) -> AuthConfig:
        explicit = sorted(
            name
            for name in self.model_fields_set
            if name.startswith("requestheader_") and name != "requestheader_client_ca_file"
        )
        if self.mode == "none":
            delegated_only = (
                "requestheader_client_ca_file",
                "client_ca_file",
                "authentication_skip_lookup",
                "authentication_kubeconfig",
                "authorization_kubeconfig",
                "token_audiences",
            )
            configured = explicit + [name for name in delegated_only if getattr(self, name)]
            if configured:
                raise ValueError(
                    f"{', '.join(configured)}: only used with mode: delegated (mode is none)"
                )
        elif self.requestheader_client_ca_file is None and explicit:
            raise ValueError(
                f"{', '.join(explicit)}: only used with requestheader_client_ca_file; without "
                "it every requestheader setting comes from the ConfigMap "
                "kube-system/extension-apiserver-authentication"
            )
        return self


class LogConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="lowest level logged"
    )
    format: Literal["json", "text"] = Field(
        "json", description="json: one JSON object per line; text: for people"
    )


class KubernetesDiscoveryConfig(_Strict):
    """One pod discovery: which pods, which endpoint, which labels.

    ``copy_labels`` maps pod label -> target label; a list copies each label under its own
    name. Times are seconds.
    """

    namespaces: tuple[str, ...] = Field(
        (), description="namespaces to watch; empty: every namespace (needs a ClusterRole)"
    )
    label_selector: str = Field(
        "", description='pods to scrape, Kubernetes syntax (e.g. "app=triton,tier in (gpu)")'
    )
    port: int | str = Field(
        DEFAULT_METRICS_PORT, description="metrics port: a number or a container port name"
    )
    path: str = Field("/metrics", description="URL path of the metrics endpoint")
    scheme: Literal["http", "https"] = Field("http", description="http or https")
    kind: TargetKind = Field("triton", description="triton or dcgm (dcgm-exporter pods)")
    deployment_label: str | None = Field(
        None,
        description="pod label naming the workload (the series' deployment label); unset: "
        "the owning ReplicaSet's Deployment",
    )
    copy_labels: dict[str, str] = Field(
        default_factory=dict,
        description="pod label -> series label; a list copies each under its own name",
    )
    watch_timeout_seconds: float = Field(
        300.0, ge=1, le=3600, description="a pod watch is renewed after this (an hour at most)"
    )
    request_timeout_seconds: float = Field(
        30.0, ge=0.1, le=300, description="one list or watch request to the API server"
    )
    backoff_initial_seconds: float = Field(
        0.5,
        ge=0.01,
        le=60,
        description="first wait after a failed list or watch; from 10 ms, so a broken API "
        "server is not hammered",
    )
    backoff_max_seconds: float = Field(
        30.0, ge=0.01, le=600, description="longest wait between retries (10 minutes at most)"
    )

    @field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, namespaces: tuple[str, ...]) -> tuple[str, ...]:
        for namespace in namespaces:
            if not _DNS1123_LABEL.match(namespace):
                raise ValueError(
                    f"{namespace!r} is not a namespace name (lowercase RFC 1123 label: "
                    "a-z, 0-9 and '-', at most 63 characters)"
                )
        if len(set(namespaces)) != len(namespaces):
            raise ValueError("a namespace is listed twice")
        return namespaces

    @field_validator("label_selector")
    @classmethod
    def _selector(cls, text: str) -> str:
        try:
            Selector.parse(text)
        except SelectorError as exc:
            raise ValueError(f"not a Kubernetes label selector: {exc}") from None
        return text

    @field_validator("port")
    @classmethod
    def _port(cls, port: int | str) -> int | str:
        if isinstance(port, int):
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is not in 1..65535")
            return port
        if not _IANA_SVC_NAME.match(port) or not re.search("[a-z]", port):
            raise ValueError(
                f"{port!r} is neither a port number nor a container port name (at most 15 "
                "characters a-z, 0-9 and '-', with a letter; write numbers without quotes)"
            )
        return port

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        if not path.startswith("/") or any(c in path for c in " ?#"):
            raise ValueError(f"{path!r} must be an absolute URL path (e.g. /metrics)")
        return path

    @field_validator("deployment_label")
    @classmethod
    def _deployment_label(cls, name: str | None) -> str | None:
        if name is not None:
            _check_label_key(name)
            if name in UNSTABLE_POD_LABELS:
                raise ValueError(f"{name!r} differs between pods of one workload")
        return name

    @field_validator("copy_labels", mode="before")
    @classmethod
    def _list_means_same_names(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            names = [str(name) for name in value]
            if len(set(names)) != len(names):
                raise ValueError("a label is listed twice")
            return {name: name for name in names}
        return value

    @field_validator("copy_labels")
    @classmethod
    def _copy_labels(cls, mapping: dict[str, str]) -> dict[str, str]:
        for source, target in mapping.items():
            _check_label_key(source)
            _check_label_key(target)
            if source in UNSTABLE_POD_LABELS:
                raise ValueError(
                    f"{source!r} differs between pods of one workload; copying it would split "
                    "a Deployment into several groups"
                )
            if target in RESERVED_TARGET_LABELS:
                hint = " (use deployment_label)" if target == "deployment" else ""
                raise ValueError(f"{target!r} is set by discovery itself{hint}")
        if len(set(mapping.values())) != len(mapping):
            raise ValueError("two pod labels are copied to the same target label")
        return mapping

    @model_validator(mode="after")
    def _backoff_order(self) -> KubernetesDiscoveryConfig:
        if self.backoff_initial_seconds > self.backoff_max_seconds:
            raise ValueError("backoff_initial_seconds must not exceed backoff_max_seconds")
        return self


def _check_label_key(name: str) -> None:
    problem = label_key_problem(name)
    if problem is not None:
        raise ValueError(f"{name!r} is not a Kubernetes label key: {problem}")


class DiscoveryConfig(_Strict):
    """Where targets come from besides ``targets:``: Kubernetes pods, watched."""

    kubernetes: tuple[KubernetesDiscoveryConfig, ...] = Field(
        (), description="pod discoveries; each lists and watches pods"
    )
    kubeconfig: str | None = Field(
        None,
        description="Kubernetes API for discovery; unset: auth.kubeconfig, then in-cluster / "
        "$KUBECONFIG / ~/.kube/config",
    )


_PROMQL_MATCHER = re.compile(
    r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|\Z)'
)
_PROMQL_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

PROMETHEUS_MAX_POINTS = 11_000
"""Prometheus refuses range queries of more points per series than this."""


def promql_matchers(text: str) -> list[tuple[str, str, str]]:
    """``name="value",name=~"regex"`` -> [(name, op, value)]; ValueError naming the problem."""
    found: list[tuple[str, str, str]] = []
    position = 0
    text = text.strip().removeprefix("{").removesuffix("}")
    while position < len(text):
        match = _PROMQL_MATCHER.match(text, position)
        if match is None:
            if not text[position:].strip(" ,"):
                break
            raise ValueError(
                f"not PromQL label matchers near {text[position:][:40]!r}: write "
                'name="value" pairs joined by commas (operators =, !=, =~, !~)'
            )
        name, op, value, _sep = match.groups()
        found.append((name, op, value))
        position = match.end()
    return found


def _check_promql_label(name: str) -> str:
    if not _PROMQL_LABEL.match(name):
        raise ValueError(f"{name!r} is not a Prometheus label name")
    return name


class PrometheusGroupConfig(_Strict):
    """One group (e.g. a Deployment) whose signals are read from Prometheus.

    ``labels`` are the group's series labels, as a scraped group would have them (``namespace``
    defaults to ``default``); ``matchers`` select the group's Triton scrape targets in
    Prometheus with target labels only (``up`` is read with them too), e.g.
    ``namespace="prod",pod=~"triton-llm-.+"``; ``pod_labels`` are the Kubernetes labels every
    pod of the group has (custom metrics' ``labelSelector``: the Deployment's selector);
    ``live: false`` when the group is scraped directly and Prometheus only warm-starts its
    forecasts.
    """

    labels: dict[str, str] = Field(
        description="the group's series labels, as a scraped group's (namespace defaults to "
        "default; not model, version or pod)"
    )
    matchers: str = Field(
        description="PromQL label matchers of the group's Triton targets, target labels only, "
        'e.g. namespace="prod",pod=~"triton-llm-.+"'
    )
    pod_labels: PodLabels = Field(
        default_factory=dict,
        description="Kubernetes labels every pod of the group has (custom metrics' "
        "labelSelector: the Deployment's selector)",
    )
    live: bool = Field(
        True,
        description="read the group's signals from Prometheus; false: the group is scraped "
        "directly and Prometheus only warm-starts its forecasts",
    )

    @field_validator("labels")
    @classmethod
    def _group_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if not name or not set(name) <= _LABEL_NAME_CHARS:
                raise ValueError(f"label name {name!r} is not a valid Kubernetes label key")
            if name in ("model", "version", "pod"):
                raise ValueError(f"{name!r} is set per series, not per group")
        return labels

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, text: str) -> str:
        found = promql_matchers(text)
        if not found:
            raise ValueError(
                "give at least one matcher: without one every Triton in Prometheus would be "
                "read as this group"
            )
        for name, _op, _value in found:
            if name in ("__name__", "model", "version"):
                raise ValueError(
                    f"{name!r}: select targets by target labels only (job, namespace, pod, ...); "
                    "the metric names and models are the adapter's to choose"
                )
        return text

    def group_labels(self) -> dict[str, str]:
        return {"namespace": "default", **self.labels}


class PrometheusSourceConfig(_Strict):
    """A Prometheus-compatible query API (Prometheus, Thanos Query, Mimir, Cortex) and the
    groups whose signals come from it.

    ``url`` is the base the API paths are appended to (``/api/v1/query``): Prometheus and
    Thanos at their root, Mimir with its prefix (``http://mimir/prometheus``). ``tenant`` is
    sent as ``X-Scope-OrgID`` (Mimir, Cortex, Thanos receive); ``bearer_token_file`` is re-read
    before every query (projected tokens rotate); ``ca_file`` verifies an https URL's
    certificate. ``scrape_interval_seconds`` is Prometheus' scrape interval for these targets:
    ``rate_window_seconds`` must cover at least two scrapes, as ``rate()`` needs two samples.
    ``warm_start_seconds`` of history are read at start to warm the forecasts (0: off).
    ``pod_label`` names the pod on Triton's series; ``gpu_*_label`` the pod mapping on
    dcgm-exporter's (``exported_pod`` etc. when Prometheus did not honour the exporter's
    labels), ``gpu_matchers`` select dcgm-exporter's series (e.g. ``job="dcgm-exporter"``).
    ``partial_response: false`` makes Thanos fail a query rather than answer from some stores
    only (a partial sum would be a guess); Prometheus ignores it. Times are seconds.
    """

    url: str = Field(
        description="base URL the API paths are appended to: Prometheus and Thanos at their "
        "root, Mimir with its prefix (http://mimir/prometheus)"
    )
    tenant: str | None = Field(
        None, description="sent as X-Scope-OrgID (Mimir, Cortex, Thanos receive); unset: none"
    )
    bearer_token_file: str | None = Field(
        None, description="bearer token, re-read before every query (projected tokens rotate)"
    )
    ca_file: str | None = Field(
        None, description="CA bundle that verifies an https url's certificate; unset: system CAs"
    )
    timeout_seconds: float = Field(
        5.0, ge=0.1, le=120, description="time allowed for one query, from 100 ms to 2 minutes"
    )
    query_interval_seconds: float = Field(
        5.0,
        ge=0.5,
        le=300,
        description="how often each group is queried: at most twice a second (each refresh "
        "is one query per group), at least every 5 minutes",
    )
    scrape_interval_seconds: float = Field(
        15.0,
        ge=0.1,
        le=600,
        description="Prometheus' scrape interval for these targets, as configured there",
    )
    rate_window_seconds: float = Field(
        60.0,
        ge=0.2,
        le=3600,
        description="the rate()/increase() window: at most an hour (a window is a sum over "
        "its samples, read on every query)",
    )
    warm_start_seconds: float = Field(
        3600.0,
        ge=0,
        le=7 * 86400,
        description="history read at start to warm the forecasts: 0 (off) to 7 days",
    )
    pod_label: str = Field("pod", description="the label naming the pod on Triton's series")
    gpu_namespace_label: str = Field(
        "namespace",
        description="dcgm-exporter's pod-mapping namespace label as stored in Prometheus "
        "(exported_namespace when the scrape did not honour the exporter's labels)",
    )
    gpu_pod_label: str = Field(
        "pod", description="dcgm-exporter's pod-mapping pod label (exported_pod: see above)"
    )
    gpu_container_label: str = Field(
        "container",
        description="dcgm-exporter's pod-mapping container label (exported_container: see above)",
    )
    gpu_matchers: str = Field(
        "",
        description='PromQL matchers selecting dcgm-exporter\'s series, e.g. job="dcgm-exporter"; '
        "empty: every DCGM series of the group's namespace",
    )
    partial_response: bool = Field(
        False,
        description="Thanos: answer from the stores that replied; false fails a query instead "
        "(a partial sum would be a guess); Prometheus ignores it",
    )
    max_concurrent_queries: int = Field(
        8, ge=1, le=256, description="queries in flight at once to this source, 1 to 256"
    )
    groups: tuple[PrometheusGroupConfig, ...] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL with a host, got {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry user:password@ credentials (use bearer_token_file)")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment: the API paths are appended")
        return url.rstrip("/")

    @field_validator("pod_label", "gpu_namespace_label", "gpu_pod_label", "gpu_container_label")
    @classmethod
    def _label_name(cls, name: str) -> str:
        return _check_promql_label(name)

    @field_validator("gpu_matchers")
    @classmethod
    def _gpu_matchers(cls, text: str) -> str:
        promql_matchers(text)
        return text

    @model_validator(mode="after")
    def _windows(self) -> PrometheusSourceConfig:
        if self.rate_window_seconds < 2 * self.scrape_interval_seconds:
            raise ValueError(
                f"rate_window_seconds ({self.rate_window_seconds:g}) must be at least twice "
                f"scrape_interval_seconds ({self.scrape_interval_seconds:g}): rate() needs two "
                "samples in its window (four scrapes are safer)"
            )
        if self.warm_start_seconds / self.query_interval_seconds > PROMETHEUS_MAX_POINTS:
            raise ValueError(
                f"warm_start_seconds / query_interval_seconds is above {PROMETHEUS_MAX_POINTS} "
                "points, which Prometheus refuses in one range query"
            )
        return self


class SourcesConfig(_Strict):
    """Where signals come from besides scraping: Prometheus-compatible query APIs."""

    prometheus: tuple[PrometheusSourceConfig, ...] = ()


class KedaScalerConfig(_Strict):
    """KEDA's external scaler (``externalscaler.ExternalScaler`` over gRPC with TLS).

    Off unless ``listen`` is set. It serves with the HTTPS API's certificate; with
    ``client_ca_file`` clients must present a certificate it issued (mutual TLS), and with
    ``client_allowed_names`` one whose subject CN is listed. ``stream_check_seconds`` is how
    often an open ``StreamIsActive`` re-reads the snapshot (s).
    """

    listen: str | None = Field(
        None, description="HOST:PORT of the gRPC scaler (e.g. 0.0.0.0:9443); unset: off"
    )
    client_ca_file: str | None = Field(
        None,
        description="CA (PEM) that must have issued each client's certificate (mutual TLS), "
        "re-read when it changes; required when auth.mode is delegated",
    )
    client_allowed_names: tuple[str, ...] = Field(
        (), description="client certificate CNs allowed; empty: any that client_ca_file issued"
    )
    stream_check_seconds: float = Field(
        1.0,
        ge=0.1,
        le=60,
        description="how often an open StreamIsActive re-reads the snapshot (10 times a "
        "second at most)",
    )
    retry_seconds: float = Field(
        5.0, ge=0.01, le=300, description="wait before binding again after a failed start"
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str | None) -> str | None:
        if listen is not None:
            parse_listen(listen)
        return listen

    @model_validator(mode="after")
    def _names_need_a_ca(self) -> KedaScalerConfig:
        if self.client_allowed_names and self.client_ca_file is None:
            raise ValueError(
                "client_allowed_names: only used with client_ca_file (the CA whose "
                "certificates carry these names)"
            )
        return self


class UIConfig(_Strict):
    """The live page (``/ui``) and its history: one ring per series, ``history_seconds`` long
    at the publish step (the scrape interval), for at most ``max_series`` series (a series
    beyond is not recorded, and the page says how many are not)."""

    enabled: bool = Field(
        True, description="serve the live page at /ui (behind the API's authn/authz)"
    )
    history_seconds: float = Field(
        3600.0,
        gt=0,
        le=86400,
        description="seconds of actual values and forecasts kept per series for the page "
        "and explain; memory grows with history_seconds / scrape interval x max_series",
    )
    max_series: int = Field(
        200,
        ge=1,
        le=10000,
        description="series recorded; one beyond is not, and the page says how many are not",
    )


class Config(_Strict):
    listen: str = Field(
        "0.0.0.0:6443",
        description="HOST:PORT of the HTTPS API ([::]:6443 for IPv6; port 0: any free port)",
    )
    tls: TLSConfig = TLSConfig()
    server: ServerConfig = ServerConfig()
    scrape: ScrapeConfig = ScrapeConfig()
    signals: SignalsConfig = SignalsConfig()
    targets: tuple[TargetConfig, ...] = Field((), description="static targets")
    predictive: PredictiveConfig = PredictiveConfig()
    log: LogConfig = LogConfig()
    auth: AuthConfig = AuthConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    keda_scaler: KedaScalerConfig = KedaScalerConfig()
    ui: UIConfig = UIConfig()
    sources: SourcesConfig = SourcesConfig()

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        parse_listen(listen)  # raises ListenAddressError (a ValueError) naming the problem
        return listen

    @model_validator(mode="after")
    def _scaler_authenticates_when_the_api_does(self) -> Config:
        scaler = self.keda_scaler
        if (
            scaler.listen is not None
            and self.auth.mode == "delegated"
            and not scaler.client_ca_file
        ):
            raise ValueError(
                "keda_scaler.client_ca_file is required when keda_scaler.listen is set and "
                "auth.mode is delegated: without client certificates anyone who reaches the "
                "port reads the metrics the HTTPS API guards"
            )
        return self

    @model_validator(mode="after")
    def _api_process_has_a_port_of_its_own(self) -> Config:
        if not self.server.api_process:
            return self
        _, port = parse_listen(self.listen)
        _, main_port = parse_listen(self.server.main_listen)
        if port != 0 and port == main_port:
            raise ValueError(
                f"server.main_listen ({self.server.main_listen}) must use another port than "
                f"listen ({self.listen}): with server.api_process the API process listens there"
            )
        return self

    @model_validator(mode="after")
    def _values_outlive_a_missed_scrape(self) -> Config:
        intervals = [("scrape.interval_seconds", self.scrape.interval_seconds)]
        intervals += [
            (f"targets.{i}.scrape_interval_seconds", t.scrape_interval_seconds)
            for i, t in enumerate(self.targets)
            if t.scrape_interval_seconds is not None
        ]
        where, longest = max(intervals, key=lambda item: item[1])
        if self.signals.max_age_seconds < 2 * longest:
            raise ValueError(
                f"signals.max_age_seconds ({self.signals.max_age_seconds:g}) must be at least "
                f"twice {where} ({longest:g} s): otherwise every value is stale before the next "
                "scrape"
            )
        return self

    @model_validator(mode="after")
    def _prometheus_groups_fit(self) -> Config:
        max_age = self.signals.max_age_seconds
        owners: dict[tuple[tuple[str, str], ...], tuple[str, bool]] = {}
        for index, source in enumerate(self.sources.prometheus):
            oldest = 2 * source.scrape_interval_seconds + source.query_interval_seconds
            if max_age < oldest:
                raise ValueError(
                    f"sources.prometheus.{index}: signals.max_age_seconds ({max_age:g}) must be "
                    f"at least twice scrape_interval_seconds ({source.scrape_interval_seconds:g})"
                    f" plus query_interval_seconds ({source.query_interval_seconds:g}), "
                    f"{oldest:g} s: otherwise one missed Prometheus scrape makes every value "
                    "stale"
                )
            for number, group in enumerate(source.groups):
                key = tuple(sorted(group.group_labels().items()))
                where = f"sources.prometheus.{index}.groups.{number}"
                if key in owners:
                    raise ValueError(
                        f"{where}: the group {dict(key)} is also {owners[key][0]}: a group's "
                        "signals come from one place"
                    )
                owners[key] = (where, group.live)
        for index, target in enumerate(self.targets):
            key = tuple(sorted({"namespace": "default", **target.labels}.items()))
            where, live = owners.get(key, ("", False))
            if live and target.kind == "triton":
                raise ValueError(
                    f"targets.{index}: its group {dict(key)} is read from Prometheus ({where}); "
                    "scrape it or read it, not both (live: false keeps Prometheus for the "
                    "warm start only)"
                )
        return self


class ConfigError(ValueError):
    """One or more precise problems, each ``FILE:LINE: field: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


def parse_target_flag(text: str) -> dict[str, Any]:
    """``URL[,label=value...]`` from ``--target`` -> a target mapping.

    Three keys are settings, not labels: ``kind=dcgm``, ``interval=SECONDS`` and
    ``pod=NAME`` (the pod it scrapes, for the custom metrics API).
    """
    url, *pairs = text.split(",")
    target: dict[str, Any] = {"url": url.strip(), "kind": "triton", "labels": {}}
    for pair in pairs:
        key, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not key:
            raise ValueError(f"--target {text!r}: {pair!r} is not label=value")
        if key == "kind":
            target["kind"] = value
        elif key == "interval":
            target["scrape_interval_seconds"] = value
        elif key == "pod":
            target["pod"] = value
        else:
            target["labels"][key] = value
    return target


MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""A config file is read whole; past 4 MiB it is not a config."""


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read ``path`` (may be None: all defaults), apply ``overrides``, validate strictly.

    Raises only :class:`ConfigError`, whatever the file holds.
    """
    if path is None:
        return parse_config(None, "<command line>", overrides)
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError([f"{source}: cannot read: {err.strerror or err}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{source}: larger than {MAX_CONFIG_BYTES // 2**20} MiB; not a config"])
    return parse_config(data, source, overrides)


def parse_config(
    data: bytes | None, source: str, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Validate the YAML ``data`` (None: no file) read from ``source`` (named in errors)."""
    raw: Any = {}
    lines: dict[tuple[str, ...], int] = {}
    if data is not None:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            bad = data[err.start]
            at = data[: err.start].count(b"\n") + 1
            raise ConfigError(
                [f"{source}:{at}: not UTF-8 text (byte 0x{bad:02x}); save the file as UTF-8"]
            ) from None
        try:
            raw, node = read_yaml(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{source}:{mark.line + 1}" if mark is not None else source
            raise ConfigError(
                [f"{where}: not valid YAML: {getattr(err, 'problem', None) or err}"]
            ) from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError([f"{source}:1: the top level must be a mapping of settings"])
        if node is not None:
            _record_lines(node, (), lines)
    if overrides:
        raw = _merge(raw, overrides)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            loc = tuple(str(part) for part in error["loc"])
            line = _nearest_line(loc, lines)
            where = f"{source}:{line}" if line else source
            field = ".".join(loc) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                keys = ", ".join(_section_keys(loc[:-1]))
                message = f"unknown setting (check the spelling); valid here: {keys}"
            elif error["type"] in _RANGE_ERRORS and (why := _field_description(loc)):
                message = f"{message}: {why}"
            problems.append(f"{where}: {field}: {message}")
        raise ConfigError(problems) from None


def _section_keys(path: tuple[str, ...]) -> list[str]:
    """The setting names allowed at ``path`` (list indexes skipped), for error messages."""
    model: type[BaseModel] = Config
    for part in path:
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        nested = _model_in(field.annotation) if field is not None else None
        if nested is None:
            return []
        model = nested
    return sorted(model.model_fields)


_RANGE_ERRORS = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}
)


def _field_description(loc: tuple[str, ...]) -> str | None:
    """The description (why its limits are what they are) of the field at ``loc``."""
    model: type[BaseModel] | None = Config
    description = None
    for part in loc:
        if part.isdigit() or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        description = field.description
        model = _model_in(field.annotation)
    return description


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside ``annotation`` (``X``, ``tuple[X, ...]``, ``X | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _record_lines(node: yaml.Node, path: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, str(key.value))
            out[child] = key.start_mark.line + 1
            _record_lines(value, child, out)
            out[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, str(index)), out)


def _nearest_line(loc: tuple[str, ...], lines: Mapping[tuple[str, ...], int]) -> int | None:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None
