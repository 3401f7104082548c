"""Typed, strict configuration: YAML file + command-line overrides.

Unknown keys, wrong types and impossible values are errors, reported as
``FILE:LINE: field.path: what is wrong`` so the operator knows exactly what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adapter.api.auth import (
    DEFAULT_ALWAYS_ALLOW_PATHS,
    DEFAULT_EXTRA_HEADERS_PREFIXES,
    DEFAULT_GROUP_HEADERS,
    DEFAULT_USERNAME_HEADERS,
)
from adapter.api.tls import parse_listen
from adapter.discovery import KubernetesDiscoveryConfig
from policies.sizing import predictive_default

_LABEL_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSConfig(_Strict):
    cert_file: str | None = None
    private_key_file: str | None = None
    hostnames: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _both_or_neither(self) -> TLSConfig:
        if (self.cert_file is None) != (self.private_key_file is None):
            raise ValueError("cert_file and private_key_file must be given together")
        return self


class ScrapeConfig(_Strict):
    interval_seconds: float = Field(1.0, gt=0, le=300)
    timeout_seconds: float = Field(0.8, gt=0, le=300)
    max_response_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    backoff_max_seconds: float = Field(5.0, gt=0)
    # Per-target caps; a scrape over either fails whole (dropping some would shrink sums).
    # 1000 models of ~11 kept series each (failure has 4 reasons), 2 versions, plus GPUs.
    max_series_per_target: int = Field(25_000, ge=1)
    max_models_per_target: int = Field(1_000, ge=1)

    @model_validator(mode="after")
    def _timeout_fits(self) -> ScrapeConfig:
        if self.timeout_seconds > self.interval_seconds * 10:
            raise ValueError("timeout_seconds should not exceed 10x interval_seconds")
        return self


class SignalsConfig(_Strict):
    rate_window_seconds: float = Field(5.0, gt=0, le=600)
    max_age_seconds: float = Field(30.0, gt=0)
    sum_versions: bool = True
    # A group member without a usable scrape for this long leaves its group as if its pod
    # had left, while another member is healthy (until then the group holds; see README).
    member_failure_drop_seconds: float = Field(60.0, gt=0)


class TargetConfig(_Strict):
    url: str
    kind: Literal["triton", "dcgm"] = "triton"
    labels: dict[str, str] = Field(default_factory=dict)
    scrape_interval_seconds: float | None = Field(None, gt=0, le=300)  # default: scrape.interval

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL with a host, got {url!r}")
        if parts.username is not None or parts.password is not None:
            # Target URLs appear in logs and metric labels: no credentials in them.
            raise ValueError("must not carry user:password@ credentials")
        return url

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if not name or not set(name) <= _LABEL_NAME_CHARS:
                raise ValueError(f"label name {name!r} is not a valid Kubernetes label key")
        return labels


Forecaster = Literal["last", "ewma", "holt", "holt-winters", "linear", "auto"]


class PredictiveDefaults(_Strict):
    step_seconds: float = Field(15.0, gt=0)  # the policy decides once per step on the mean rate
    cold_start_seconds: float = Field(120.0, ge=0)
    hpa_sync_period_seconds: float = Field(15.0, gt=0)
    # The policy's own defaults: the service runs what the simulator evaluated.
    forecaster: Forecaster = predictive_default("forecaster")
    quantile: float = Field(predictive_default("quantile"), gt=0, lt=1)
    slo_seconds: float = Field(0.5, gt=0)
    capacity_rps: float | None = Field(None, gt=0)
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(100, ge=1)


class PredictiveOverride(_Strict):
    match: dict[str, str]
    step_seconds: float | None = Field(None, gt=0)
    cold_start_seconds: float | None = Field(None, ge=0)
    hpa_sync_period_seconds: float | None = Field(None, gt=0)
    forecaster: Forecaster | None = None
    quantile: float | None = Field(None, gt=0, lt=1)
    slo_seconds: float | None = Field(None, gt=0)
    capacity_rps: float | None = Field(None, gt=0)
    min_replicas: int | None = Field(None, ge=0)
    max_replicas: int | None = Field(None, ge=1)


class PredictiveConfig(_Strict):
    defaults: PredictiveDefaults = PredictiveDefaults()
    series: tuple[PredictiveOverride, ...] = ()

    def for_series(self, labels: Mapping[str, str]) -> PredictiveDefaults:
        """Defaults merged with every override whose ``match`` is a subset of ``labels``."""
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
        return PredictiveDefaults(**merged)


class AuthConfig(_Strict):
    """Delegated authentication and authorisation (external-metrics-api-and-hpa.md §2).

    ``none``: no authentication at all (local use, tests). ``delegated``: front-proxy client
    certificates, bearer tokens via TokenReview, authorisation via SubjectAccessReview. Without
    ``requestheader_client_ca_file`` every ``requestheader_*`` setting is read from the
    ConfigMap ``kube-system/extension-apiserver-authentication`` at start.
    """

    mode: Literal["none", "delegated"] = "none"
    requestheader_client_ca_file: str | None = None
    requestheader_allowed_names: tuple[str, ...] = ()  # empty: any CN from the CA
    requestheader_username_headers: tuple[str, ...] = Field(DEFAULT_USERNAME_HEADERS, min_length=1)
    requestheader_group_headers: tuple[str, ...] = DEFAULT_GROUP_HEADERS
    requestheader_extra_headers_prefix: tuple[str, ...] = DEFAULT_EXTRA_HEADERS_PREFIXES
    authorization_cache_seconds: float = Field(10.0, ge=0, le=3600)
    always_allow_paths: tuple[str, ...] = DEFAULT_ALWAYS_ALLOW_PATHS
    kubeconfig: str | None = None  # default: in-cluster, else $KUBECONFIG / ~/.kube/config
    review_timeout_seconds: float = Field(10.0, gt=0, le=60)

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
            configured = explicit + (
                ["requestheader_client_ca_file"] if self.requestheader_client_ca_file else []
            )
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
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class DiscoveryConfig(_Strict):
    """Where targets come from besides ``targets:``: Kubernetes pods, watched."""

    kubernetes: tuple[KubernetesDiscoveryConfig, ...] = ()
    kubeconfig: str | None = None  # default: auth.kubeconfig, then in-cluster / $KUBECONFIG


class Config(_Strict):
    listen: str = "0.0.0.0:6443"
    tls: TLSConfig = TLSConfig()
    scrape: ScrapeConfig = ScrapeConfig()
    signals: SignalsConfig = SignalsConfig()
    targets: tuple[TargetConfig, ...] = ()
    predictive: PredictiveConfig = PredictiveConfig()
    log: LogConfig = LogConfig()
    auth: AuthConfig = AuthConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        parse_listen(listen)  # raises ListenAddressError (a ValueError) naming the problem
        return listen


class ConfigError(ValueError):
    """One or more precise problems, each ``FILE:LINE: field: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


def parse_target_flag(text: str) -> dict[str, Any]:
    """``URL[,label=value...]`` from ``--target`` -> a target mapping.

    Two keys are settings, not labels: ``kind=dcgm`` and ``interval=SECONDS``.
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
        else:
            target["labels"][key] = value
    return target


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read ``path`` (may be None: all defaults), apply ``overrides``, validate strictly."""
    source = str(path) if path is not None else "<command line>"
    raw: Any = {}
    lines: dict[tuple[str, ...], int] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError([f"{source}: cannot read: {err.strerror}"]) from None
        try:
            loader = yaml.SafeLoader(text)
            try:
                node = loader.get_single_node()
                raw = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{source}:{mark.line + 1}" if mark is not None else source
            raise ConfigError(
                [f"{where}: not valid YAML: {getattr(err, 'problem', err)}"]
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
                message = "unknown setting (check the spelling; see docs for valid keys)"
            problems.append(f"{where}: {field}: {message}")
        raise ConfigError(problems) from None


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
