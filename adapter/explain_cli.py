"""``tritonscale explain METRIC``: ask a running adapter why a metric has the value it has.

The adapter answers ``GET /explain/v1/namespaces/<ns>/<metric>?labelSelector=...`` (see
:mod:`adapter.explain`); this command prints it for a person (or as JSON with ``--json``) and,
given an HPA object (``--hpa FILE``, or ``--hpa-name NAME`` read from the cluster with the
kubeconfig), runs the HPA's own algorithm (:class:`policies.hpa.HPAController`) on the values
the adapter serves for that HPA's External metrics, with the current replicas.

Connecting works like kubectl: ``--server`` is the adapter (e.g. after ``kubectl -n
tritonscale port-forward svc/tritonscale 6443:443``), verified with ``--certificate-authority``
or not at all with ``--insecure-skip-tls-verify``; credentials are ``--token``, else the
kubeconfig user's token or client certificate (``--kubeconfig``, ``--context``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from adapter.kube.hpa import HPAObject, HPAObjectError, find_hpa, hpa_from_object
from adapter.kube.quantity import QuantityError, parse_quantity
from policies.hpa import HPAController

Fetch = Callable[[str], tuple[int, Any]]


class ExplainError(Exception):
    """A problem to report in one line (exit status 1)."""


# --- connecting, as kubectl does ---------------------------------------------------------------


@dataclass
class KubeUser:
    """A kubeconfig user's credentials; files are made for inline certificate data."""

    token: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None


@dataclass
class KubeCluster:
    server: str
    ca_file: str | None = None
    insecure: bool = False


@dataclass
class KubeContext:
    cluster: KubeCluster
    user: KubeUser
    namespace: str | None = None
    temp_files: list[str] = field(default_factory=list)


def _inline(data: str, temp_files: list[str]) -> str:
    """Write base64 certificate data (``*-data`` fields) to a private temporary file."""
    import base64

    handle, path = tempfile.mkstemp(prefix="tritonscale-", suffix=".pem")
    with os.fdopen(handle, "wb") as out:
        out.write(base64.b64decode(data))
    temp_files.append(path)
    return path


def load_kubeconfig(path: str, context_name: str | None) -> KubeContext:
    """The cluster, user and namespace of ``context_name`` (default: current-context)."""
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ExplainError(f"kubeconfig {path}: {exc}") from None
    base = Path(path).parent

    def named(section: str, name: str) -> Mapping[str, Any]:
        for entry in config.get(section) or ():
            if entry.get("name") == name:
                found: Mapping[str, Any] = entry.get(section[:-1]) or {}
                return found
        raise ExplainError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")

    name = context_name or config.get("current-context")
    if not name:
        raise ExplainError(f"kubeconfig {path}: no current-context; give --context")
    context = named("contexts", name)
    cluster = named("clusters", context.get("cluster", ""))
    user = named("users", context.get("user", "")) if context.get("user") else {}
    temp: list[str] = []

    def file_of(entry: Mapping[str, Any], key: str) -> str | None:
        if entry.get(f"{key}-data"):
            return _inline(entry[f"{key}-data"], temp)
        if entry.get(key):
            return str(base / entry[key])
        return None

    if user.get("exec") or user.get("auth-provider"):
        raise ExplainError(
            f"kubeconfig {path}: user of context {name!r} uses an exec or auth-provider plugin, "
            "which tritonscale explain does not run; pass --token $(kubectl create token ...)"
        )
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = (base / user["tokenFile"]).read_text(encoding="utf-8").strip()
    return KubeContext(
        cluster=KubeCluster(
            server=str(cluster.get("server", "")),
            ca_file=file_of(cluster, "certificate-authority"),
            insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        ),
        user=KubeUser(
            token=token,
            client_cert_file=file_of(user, "client-certificate"),
            client_key_file=file_of(user, "client-key"),
        ),
        namespace=context.get("namespace"),
        temp_files=temp,
    )


def _ssl_context(ca_file: str | None, insecure: bool, user: KubeUser) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if user.client_cert_file and user.client_key_file:
        context.load_cert_chain(user.client_cert_file, user.client_key_file)
    return context


def http_getter(server: str, context: ssl.SSLContext, token: str | None, timeout: float) -> Fetch:
    """GET ``server + path``; returns (status, parsed JSON or text)."""

    def fetch(path: str) -> tuple[int, Any]:
        request = urllib.request.Request(server.rstrip("/") + path)
        request.add_header("Accept", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return response.status, _body(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _body(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ExplainError(f"cannot reach {server}: {reason}") from None

    return fetch


def _body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


def _message(body: Any) -> str:
    if isinstance(body, Mapping) and "message" in body:
        return str(body["message"])
    return str(body)[:500]


# --- the HPA -----------------------------------------------------------------------------------


def evaluate_hpa(hpa: HPAObject, namespace: str, replicas: int, fetch: Fetch) -> dict[str, Any]:
    """What the HPA controller would decide now with the values the adapter serves.

    A fresh controller has no recommendation history: ``desired_replicas`` is what one
    reconcile does from ``replicas`` (scale-up limits apply; a scale-down is held by the
    stabilisation window, whose past a fresh controller does not know); ``metric_replicas`` is
    the proposal before that.
    """
    values: list[list[float] | None] = []
    metrics = []
    for ref in hpa.metrics:
        path = (
            f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{quote(namespace)}/{quote(ref.name)}"
        )
        if ref.selector:
            path += f"?labelSelector={quote(ref.selector)}"
        code, body = fetch(path)
        entry: dict[str, Any] = {
            "name": ref.name,
            "selector": ref.selector,
            "target_type": ref.target.kind,
            "target": ref.target.target,
            "status": code,
        }
        if code == 200:
            try:
                items = [float(parse_quantity(i["value"])) for i in body["items"]]
            except (KeyError, TypeError, QuantityError) as exc:
                raise ExplainError(f"{path}: unexpected answer: {exc}") from None
            entry["values"] = items
            values.append(items)
        else:
            entry["error"] = _message(body)
            values.append(None)
        metrics.append(entry)
    result = HPAController(hpa.spec).reconcile(0.0, replicas, replicas, replicas, values)
    for entry, proposal in zip(metrics, result.proposals, strict=False):
        entry["proposed_replicas"] = proposal.replicas
        if proposal.error:
            entry["proposal_error"] = proposal.error
    return {
        "name": hpa.name,
        "namespace": hpa.namespace or namespace,
        "min_replicas": hpa.spec.min_replicas,
        "max_replicas": hpa.spec.max_replicas,
        "current_replicas": replicas,
        "metrics": metrics,
        "not_evaluated": list(hpa.not_evaluated),
        "metric_replicas": result.metric_replicas,
        "desired_replicas": result.desired_replicas,
        "rescale": result.rescale,
        "reason": result.reason,
        "error": result.error,
        "scaling_limited": (
            result.scaling_limited.message
            if result.scaling_limited is not None and result.scaling_limited.status
            else None
        ),
    }


def read_hpa_file(path: str) -> HPAObject:
    try:
        documents = list(yaml.safe_load_all(Path(path).read_text(encoding="utf-8")))
        return hpa_from_object(find_hpa(documents))
    except OSError as exc:
        raise ExplainError(f"--hpa {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ExplainError(f"--hpa {path}: not YAML or JSON: {exc}") from None
    except HPAObjectError as exc:
        raise ExplainError(f"--hpa {path}: {exc}") from None


def read_hpa_from_cluster(
    kube: KubeContext, namespace: str, name: str, timeout: float
) -> HPAObject:
    if not kube.cluster.server:
        raise ExplainError("--hpa-name needs a kubeconfig whose cluster has a server")
    context = _ssl_context(kube.cluster.ca_file, kube.cluster.insecure, kube.user)
    fetch = http_getter(kube.cluster.server, context, kube.user.token, timeout)
    path = (
        f"/apis/autoscaling/v2/namespaces/{quote(namespace)}/horizontalpodautoscalers/{quote(name)}"
    )
    code, body = fetch(path)
    if code != 200:
        raise ExplainError(f"GET {path} from {kube.cluster.server}: {code}: {_message(body)}")
    try:
        return hpa_from_object(body)
    except HPAObjectError as exc:
        raise ExplainError(f"HPA {namespace}/{name}: {exc}") from None


# --- printing ----------------------------------------------------------------------------------


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.{digits}g}"


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


def _clock(unix: float | None, now: float) -> str:
    if unix is None:
        return "never"
    stamp = time.strftime("%H:%M:%S", time.localtime(unix))
    return f"{stamp} ({now - unix:.1f}s ago)"


def render(doc: Mapping[str, Any], hpa: Mapping[str, Any] | None = None) -> str:
    """The explanation for a person (every section the JSON has, in reading order)."""
    now = float(doc["now"])
    out: list[str] = []
    add = out.append
    selector = doc["selector"] or "(everything)"
    add(f"{doc['metric']} in namespace {doc['namespace']}, selector {selector}")
    if doc.get("description"):
        add(f"  {doc['description']} [{doc['unit']}]")
    served = doc["served"]
    add("")
    if served["status"] == 200:
        add(f"The API serves {len(served['values'])} series now:")
        for item in served["values"]:
            add(f"  {_labels(item['labels'])} = {_num(item['value'], 6)}")
    else:
        add(f"The API answers {served['status']}: {served['message']}")
    for series in doc["series"]:
        add("")
        age = series["age_seconds"]
        add(
            f"Series {_labels(series['labels'])}: {_num(series['value'], 6)} ({series['state']}; "
            f"built from scrapes {_num(age, 3)}s old, max age {_num(doc['max_age_seconds'])}s)"
        )
        if series["reason"]:
            add(f"  why: {series['reason']}")
        if series["window_seconds"]:
            add(f"  averaged over a {series['window_seconds']}s rate window")
        for target in series["targets"]:
            _render_target(add, target, now)
        if series["targets_not_shown"]:
            add(f"  ... and {series['targets_not_shown']} more targets")
        if series["forecast"] is not None:
            _render_forecast(add, series["forecast"], doc["metric"])
    if doc["series_not_shown"]:
        add(f"... and {doc['series_not_shown']} more series (narrow the selector)")
    if doc["absent"]:
        add("")
        add("Why nothing is served:")
        for reason in doc["absent"]:
            add(f"  - {reason}")
    if hpa is not None:
        add("")
        _render_hpa(add, hpa)
    return "\n".join(out) + "\n"


def _render_target(add: Callable[[str], None], target: Mapping[str, Any], now: float) -> None:
    pod = f", pod {target['pod']}" if target["pod"] else ""
    add(f"  target {target['url']} ({target['kind']}{pod}): {target['outcome']}")
    add(
        f"    last scrape ended {_clock(target['last_attempt'], now)}; last success "
        f"{_clock(target['last_success'], now)}; {target['scrapes']} successful scrapes, "
        f"{target['restarts']} restarts"
    )
    if target["error"]:
        add(
            f"    failing {target['consecutive_failures']} times in a row: {target['error']}: "
            f"{target['error_detail']}"
        )
    window = target["window"]
    if window:
        add(
            f"    rate window: {_num(window['span_seconds'], 3)}s between the readings of "
            f"{_clock(window['base'], now)} and {_clock(window['newest'], now)}"
        )
    else:
        add("    rate window: fewer than two readings since the target (re)started")
    readings = target["readings"]
    if readings and "success" in readings[0]:
        add(
            "    readings (* in the window): time      pending   success   failure  queue_us"
            "  compute_us"
        )
        for r in readings:
            mark = "*" if r["in_window"] else " "
            stamp = time.strftime("%H:%M:%S", time.localtime(r["time"]))
            add(
                f"      {mark} {stamp}  {_num(r.get('pending')):>9} {_num(r.get('success'), 9):>9} "
                f"{_num(r.get('failure'), 9):>9} {_num(r.get('queue_us'), 9):>9} "
                f"{_num(r.get('compute_infer_us'), 9):>11}"
            )
    elif readings:
        for r in readings:
            add(f"      {_clock(r['time'], now)}: {r}")


def _render_forecast(add: Callable[[str], None], f: Mapping[str, Any], metric: str) -> None:
    s = f["settings"]
    add(
        f"  forecast: {f['forecaster']['name']}, one step every {_num(s['step_seconds'])}s, "
        f"horizon {_num(f['horizon_seconds'])}s (cold start {_num(s['cold_start_seconds'])}s + "
        f"HPA sync {_num(s['hpa_sync_period_seconds'])}s, {f['horizon_steps']} steps); "
        f"{f['steps']} steps so far"
    )
    inputs = f["inputs"]
    add(
        f"    last step's inputs: arrival {_num(inputs['arrival_rate'])} req/s (mean of the "
        f"step's fresh rates), queue {_num(inputs['queue_depth'])}, "
        f"{_num(inputs['replicas'])} pods scraped; newest rate "
        f"{_num(inputs['age_seconds'], 3)}s old"
    )
    state = ", ".join(f"{k}={_num(v)}" for k, v in f["forecaster"]["state"].items())
    ready = "ready" if f["forecaster"]["ready"] else "warming up"
    add(f"    forecaster ({ready}): {state}")
    add(
        f"    point forecast {_num(f['point'])} req/s; the forecaster's own bound "
        f"{_num(f['model_upper'])} req/s"
    )
    h = f["headroom"]
    target = ", ".join(f"{k}={_num(v)}" for k, v in h["target"].items())
    add(
        f"    headroom ({h['method']}, {target}): {h['used']}; {h['samples']} errors "
        f"(needs {h['min_samples']}), margin {_num(h['margin'])} req/s"
    )
    if h["details"]:
        add("      " + ", ".join(f"{k}={_num(v)}" for k, v in h["details"].items()))
    if h["recent_errors"]:
        add(
            "      newest errors (actual - forecast): "
            + " ".join(_num(e, 3) for e in h["recent_errors"][-12:])
        )
    add(f"    upper {_num(f['upper'])} req/s = point + {_num(f['margin'])}")
    add(
        f"    planned for (triton_arrival_rate_forecast): {_num(f.get('planned'))} req/s "
        f"= upper / planned utilisation {_num(f.get('utilisation'))}"
    )
    if f["sizes_replicas"]:
        add(
            f"    desired replicas {_num(f['desired_replicas'])} (capacity "
            f"{_num(s['capacity_rps'])} req/s per replica, SLO {_num(s['slo_seconds'])}s, "
            f"{s['min_replicas']}..{s['max_replicas']}); queue expected at the horizon "
            f"{_num(f['queue_depth_forecast'])}{'; burst guard holding' if f['panic'] else ''}"
        )
    else:
        add(
            "    no capacity configured (capacity_rps): desired replicas and the queue "
            "forecast are not served"
        )
    score = f["score"]
    if score["checks"]:
        add(
            f"    score: {score['checks']} forecasts compared with what arrived, "
            f"{score['misses']} exceeded (coverage {100 * score['coverage']:.1f} %)"
        )
    if f.get("note"):
        add(f"    note: {f['note']}")


def _render_hpa(add: Callable[[str], None], hpa: Mapping[str, Any]) -> None:
    add(
        f"HPA {hpa['namespace']}/{hpa['name']} ({hpa['min_replicas']}..{hpa['max_replicas']} "
        f"replicas), from {hpa['current_replicas']} current replicas:"
    )
    for m in hpa["metrics"]:
        head = f"  {m['name']}{{{m['selector']}}} target {m['target_type']} {_num(m['target'])}: "
        if "values" in m:
            values = ", ".join(_num(v, 6) for v in m["values"])
            add(head + f"values [{values}] -> {_num(m.get('proposed_replicas'))} replicas")
        else:
            add(head + f"{m['status']}: {m['error']} (the HPA cannot use it)")
        if m.get("proposal_error"):
            add(f"    {m['proposal_error']}")
    for skipped in hpa["not_evaluated"]:
        add(f"  not evaluated: {skipped}")
    if hpa["error"]:
        add(f"  the controller would not scale: {hpa['error']}")
        return
    add(
        f"  the metrics propose {_num(hpa['metric_replicas'])} replicas; one reconcile sets "
        f"{hpa['desired_replicas']}" + (f" ({hpa['reason']})" if hpa["reason"] else " (no change)")
    )
    if hpa["scaling_limited"]:
        add(f"  limited: {hpa['scaling_limited']}")
    add(
        "  (a fresh controller: the real one also weighs its recommendations of the last "
        "stabilisation window, so a scale-down may come later)"
    )


# --- the command -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritonscale explain",
        description="Why a metric has the value it has, asked of a running tritonscale.",
    )
    parser.add_argument("metric")
    parser.add_argument("-n", "--namespace", help="default: the kubeconfig context's, else default")
    parser.add_argument("-l", "--selector", default="", help="label selector over the series")
    parser.add_argument("--server", help="the adapter, e.g. https://127.0.0.1:6443")
    parser.add_argument("--insecure-skip-tls-verify", action="store_true")
    parser.add_argument(
        "--certificate-authority", help="CA file that signed the adapter's certificate"
    )
    parser.add_argument("--token", help="bearer token (default: the kubeconfig user's)")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, else ~/.kube/config if present")
    parser.add_argument("--context", help="kubeconfig context (default: current-context)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--hpa", metavar="FILE", help="an HPA object (YAML or JSON) to evaluate")
    group.add_argument("--hpa-name", metavar="NAME", help="read this HPA from the cluster")
    parser.add_argument(
        "--replicas", type=int, help="current replicas for the HPA (default: the HPA's status)"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON document")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    return parser


def _kubeconfig_path(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if env:
        return env
    default = Path.home() / ".kube" / "config"
    return str(default) if default.exists() else None


@contextlib.contextmanager
def _cleanup(kube: KubeContext | None) -> Iterator[None]:
    try:
        yield
    finally:
        for path in kube.temp_files if kube else ():
            with contextlib.suppress(OSError):
                os.unlink(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        kube_path = _kubeconfig_path(args.kubeconfig)
        kube = load_kubeconfig(kube_path, args.context) if kube_path else None
        with _cleanup(kube):
            return _explain(args, kube)
    except ExplainError as exc:
        print(f"tritonscale explain: {exc}", file=sys.stderr)
        return 1


def _explain(args: argparse.Namespace, kube: KubeContext | None) -> int:
    if not args.server:
        raise ExplainError(
            "give --server https://HOST:PORT, the adapter itself (e.g. after `kubectl -n "
            "tritonscale port-forward svc/tritonscale 6443:443`: --server https://127.0.0.1:6443)"
        )
    namespace = args.namespace or (kube.namespace if kube else None) or "default"
    user = kube.user if kube else KubeUser()
    token = args.token or user.token
    context = _ssl_context(args.certificate_authority, args.insecure_skip_tls_verify, user)
    fetch = http_getter(args.server, context, token, args.timeout)
    path = f"/explain/v1/namespaces/{quote(namespace)}/{quote(args.metric)}"
    if args.selector:
        path += f"?labelSelector={quote(args.selector)}"
    code, doc = fetch(path)
    if code != 200:
        raise ExplainError(f"GET {path}: {code}: {_message(doc)}")
    hpa_report = None
    if args.hpa or args.hpa_name:
        if args.hpa:
            hpa = read_hpa_file(args.hpa)
        else:
            if kube is None:
                raise ExplainError("--hpa-name needs a kubeconfig (--kubeconfig or $KUBECONFIG)")
            hpa = read_hpa_from_cluster(kube, namespace, args.hpa_name, args.timeout)
        replicas = args.replicas if args.replicas is not None else hpa.current_replicas
        if replicas is None:
            replicas = _scraped_replicas(doc)
        if replicas is None:
            raise ExplainError(
                "the current replicas are not known (the HPA has no status.currentReplicas and "
                "the adapter no forecast inputs): give --replicas N"
            )
        hpa_report = evaluate_hpa(hpa, namespace, replicas, fetch)
    if args.json:
        print(json.dumps({**doc, "hpa": hpa_report}, indent=2))
    else:
        sys.stdout.write(render(doc, hpa_report))
    return 0


def _scraped_replicas(doc: Mapping[str, Any]) -> int | None:
    for series in doc["series"]:
        forecast = series.get("forecast")
        if forecast and forecast["inputs"]["replicas"] is not None:
            value = forecast["inputs"]["replicas"]
            return int(value) if math.isfinite(value) else None
    return None


if __name__ == "__main__":
    raise SystemExit(main())
