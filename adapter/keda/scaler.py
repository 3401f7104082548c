"""KEDA's external scaler (``externalscaler.ExternalScaler``), answered from the snapshot.

KEDA calls it for each ScaledObject whose trigger is ``type: external`` (or ``external-push``,
which adds ``StreamIsActive``), passing the ScaledObject's namespace and the trigger's
``metadata`` as ``scalerMetadata``. What it reads is what the external metrics API serves:
the series of one metric in that namespace matching a label selector, summed (as the HPA
sums external series). The trigger's metadata:

``metric``              a served metric, e.g. ``triton_desired_replicas`` (required)
``labelSelector``       Kubernetes selector over the series' labels, e.g.
                        ``deployment=triton-llm,model=resnet`` (default: every series)
``targetValue``         the HPA target per replica (AverageValue) or in all (Value), e.g.
                        ``1`` for ``triton_desired_replicas`` (required by GetMetricSpec)
``activationMetric``    what decides activity (default ``triton_arrival_rate``, req/s)
``activationThreshold`` active while that sum is above this (default ``0``: any arrival)

Activation is scale-to-zero's switch: KEDA scales to zero after ``cooldownPeriod`` of
``IsActive`` false, and from zero when it turns true. With the default, a Deployment whose
Triton pods see no arrivals goes inactive; at zero replicas no Triton reports arrivals at
all, so the value is unknown and the answer is an error (KEDA holds), never a "not active"
guessed from silence: waking from zero needs a signal from in front of Triton (a second
trigger). A value that is stale or not known yet is an error status (``UNAVAILABLE``), never
0; an unknown metric or no matching series is ``NOT_FOUND``; bad metadata is
``INVALID_ARGUMENT`` naming the key.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from adapter.keda.proto.externalscaler_pb2 import (
    GetMetricSpecResponse,
    GetMetricsRequest,
    GetMetricsResponse,
    IsActiveResponse,
    MetricSpec,
    MetricValue,
    ScaledObjectRef,
)
from adapter.kube.selectors import Selector, SelectorError
from adapter.provider import (
    ExternalMetricsProvider,
    MetricNotFoundError,
    NoMatchingSeriesError,
    StaleMetricError,
)

__all__ = [
    "DEFAULT_ACTIVATION_METRIC",
    "DEFAULT_ACTIVATION_THRESHOLD",
    "ExternalScaler",
    "ScalerError",
    "Trigger",
]

log = logging.getLogger(__name__)

DEFAULT_ACTIVATION_METRIC = "triton_arrival_rate"
DEFAULT_ACTIVATION_THRESHOLD = 0.0
"""Requests per second: active while any request arrives."""


class ScalerError(Exception):
    """An answer that is not a value: a gRPC status code and a message naming the cause."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _invalid(message: str) -> ScalerError:
    return ScalerError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _number(metadata: Mapping[str, str], key: str, *, positive: bool) -> float | None:
    text = metadata.get(key)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _invalid(f"scalerMetadata.{key}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "above 0" if positive else "0 or more"
        raise _invalid(f"scalerMetadata.{key}: {text!r} must be a finite number {bound}")
    return value


@dataclass(frozen=True, slots=True)
class Trigger:
    """One ScaledObject trigger, parsed from its ``ScaledObjectRef``."""

    namespace: str
    metric: str
    selector: Selector
    target_value: float | None
    activation_metric: str
    activation_threshold: float

    @classmethod
    def from_ref(cls, ref: ScaledObjectRef) -> Trigger:
        """Raises ScalerError(INVALID_ARGUMENT) naming the key that is wrong."""
        metadata = dict(ref.scalerMetadata)
        if not ref.namespace:
            raise _invalid("the ScaledObjectRef has no namespace")
        metric = metadata.get("metric", "").strip()
        if not metric:
            raise _invalid(
                "scalerMetadata.metric is required: the served metric to scale on, e.g. "
                "triton_desired_replicas"
            )
        try:
            selector = Selector.parse(metadata.get("labelSelector", ""))
        except SelectorError as exc:
            raise _invalid(f"scalerMetadata.labelSelector: {exc}") from None
        threshold = _number(metadata, "activationThreshold", positive=False)
        return cls(
            namespace=ref.namespace,
            metric=metric,
            selector=selector,
            target_value=_number(metadata, "targetValue", positive=True),
            activation_metric=metadata.get("activationMetric", "").strip()
            or DEFAULT_ACTIVATION_METRIC,
            activation_threshold=DEFAULT_ACTIVATION_THRESHOLD if threshold is None else threshold,
        )


class ExternalScaler:
    """The servicer of ``externalscaler.ExternalScaler`` (register it with the generated
    ``add_ExternalScalerServicer_to_server``); reads only through ``provider``.

    ``stream_check_seconds``: how often an open ``StreamIsActive`` re-reads the snapshot;
    it sends a message when activity changes (and the current activity when it opens).
    ``allowed_names``: client certificate CNs allowed (empty: any client the TLS handshake
    accepted).
    """

    def __init__(
        self,
        provider: ExternalMetricsProvider,
        *,
        stream_check_seconds: float,
        allowed_names: Collection[str] = (),
    ) -> None:
        self._provider = provider
        self._interval = stream_check_seconds
        self._allowed_names = frozenset(allowed_names)
        self._served = frozenset(m.name for m in provider.list_all_external_metrics())

    # -- reading the snapshot (no gRPC here) --------------------------------------------------

    def check_metrics(self, trigger: Trigger) -> None:
        """Raises ScalerError(NOT_FOUND) unless both metrics the trigger names are served."""
        for key, name in (
            ("metric", trigger.metric),
            ("activationMetric", trigger.activation_metric),
        ):
            if name not in self._served:
                raise ScalerError(
                    grpc.StatusCode.NOT_FOUND,
                    f"scalerMetadata.{key}: {name!r} is not a served metric; one of: "
                    + ", ".join(sorted(self._served)),
                )

    def total(self, namespace: str, metric: str, selector: Selector) -> float:
        """The sum of ``metric``'s series in ``namespace`` matching ``selector``.

        Raises ScalerError: NOT_FOUND (unknown metric, no matching series), UNAVAILABLE
        (stale or not a number: not known now).
        """
        try:
            values = self._provider.get_external_metric(namespace, metric, selector)
        except MetricNotFoundError:
            raise ScalerError(grpc.StatusCode.NOT_FOUND, f"metric {metric} is not served") from None
        except NoMatchingSeriesError as exc:
            raise ScalerError(
                grpc.StatusCode.NOT_FOUND,
                f"{exc} (at zero replicas no Triton pod reports it: wake from zero with "
                "another trigger)",
            ) from None
        except StaleMetricError as exc:
            raise ScalerError(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        total = math.fsum(v.value for v in values)
        if not math.isfinite(total):
            raise ScalerError(
                grpc.StatusCode.UNAVAILABLE,
                f"metric {metric} in namespace {namespace} matching {selector.source!r} is "
                f"{total!r}, not a finite number; holding rather than reporting a guess",
            )
        return total

    def is_active(self, trigger: Trigger) -> bool:
        """Whether the activation metric's sum is above the threshold (ScalerError if
        unknown)."""
        self.check_metrics(trigger)
        rate = self.total(trigger.namespace, trigger.activation_metric, trigger.selector)
        return rate > trigger.activation_threshold

    # -- gRPC methods -------------------------------------------------------------------------

    async def _abort(self, context: Any, error: ScalerError) -> NoReturn:
        await context.abort(error.code, str(error))
        raise AssertionError("context.abort returned")  # grpc raises; keeps the types honest

    async def _trigger(self, ref: ScaledObjectRef, context: Any) -> Trigger:
        """Authorise the caller and parse its trigger, or abort the call."""
        if self._allowed_names:
            names = [
                name.decode(errors="replace") if isinstance(name, bytes) else str(name)
                for name in (context.auth_context() or {}).get("x509_common_name", [])
            ]
            if not self._allowed_names.intersection(names):
                log.info("scaler client refused", extra={"common_names": names})
                await self._abort(
                    context,
                    ScalerError(
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"client certificate CN {names or '(none)'} is not in "
                        "keda_scaler.client_allowed_names",
                    ),
                )
        try:
            return Trigger.from_ref(ref)
        except ScalerError as error:
            await self._abort(context, error)

    async def IsActive(self, request: ScaledObjectRef, context: Any) -> IsActiveResponse:
        trigger = await self._trigger(request, context)
        try:
            return IsActiveResponse(result=self.is_active(trigger))
        except ScalerError as error:
            log.debug("IsActive not answered", extra={"ref": request.name, "error": str(error)})
            await self._abort(context, error)

    async def StreamIsActive(
        self, request: ScaledObjectRef, context: Any
    ) -> AsyncIterator[IsActiveResponse]:
        """The current activity at once, then each change; silent while it is not known
        (KEDA keeps its last state), ended only by the client or a bad trigger."""
        trigger = await self._trigger(request, context)
        try:
            self.check_metrics(trigger)
        except ScalerError as error:
            await self._abort(context, error)
        where = {"scaled_object": f"{trigger.namespace}/{request.name}"}
        last: bool | None = None
        known = True
        while True:
            try:
                active: bool | None = self.is_active(trigger)
            except ScalerError as error:
                active = None
                if known:
                    log.info("scaler activity unknown", extra={**where, "error": str(error)})
            known = active is not None
            if active is not None and active != last:
                log.info("scaler activity", extra={**where, "active": active})
                last = active
                yield IsActiveResponse(result=active)
            await asyncio.sleep(self._interval)

    async def GetMetricSpec(self, request: ScaledObjectRef, context: Any) -> GetMetricSpecResponse:
        trigger = await self._trigger(request, context)
        try:
            self.check_metrics(trigger)
            if trigger.target_value is None:
                raise _invalid(
                    "scalerMetadata.targetValue is required: the HPA target for "
                    f"{trigger.metric} (e.g. 1 for triton_desired_replicas with AverageValue)"
                )
        except ScalerError as error:
            await self._abort(context, error)
        spec = MetricSpec(
            metricName=trigger.metric,
            targetSize=max(1, math.ceil(trigger.target_value)),
            targetSizeFloat=trigger.target_value,
        )
        return GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(self, request: GetMetricsRequest, context: Any) -> GetMetricsResponse:
        trigger = await self._trigger(request.scaledObjectRef, context)
        try:
            self.check_metrics(trigger)
            if request.metricName != trigger.metric:
                raise ScalerError(
                    grpc.StatusCode.NOT_FOUND,
                    f"metric {request.metricName!r} is not this trigger's "
                    f"(scalerMetadata.metric is {trigger.metric!r})",
                )
            value = self.total(trigger.namespace, trigger.metric, trigger.selector)
        except ScalerError as error:
            log.debug("GetMetrics not answered", extra={"error": str(error)})
            await self._abort(context, error)
        # KEDA reads metricValueFloat when it is above 0, else metricValue: both agree
        metric = MetricValue(
            metricName=request.metricName, metricValue=round(value), metricValueFloat=value
        )
        return GetMetricsResponse(metricValues=[metric])

    async def StreamMetricSpec(
        self, request: ScaledObjectRef, context: Any
    ) -> AsyncIterator[GetMetricSpecResponse]:
        """Optional in KEDA's contract: the spec never changes here, so KEDA keeps polling
        GetMetricSpec (it falls back silently on UNIMPLEMENTED)."""
        await self._abort(
            context, ScalerError(grpc.StatusCode.UNIMPLEMENTED, "metric specs do not change")
        )
        yield GetMetricSpecResponse()  # pragma: no cover - unreachable, makes this a generator
