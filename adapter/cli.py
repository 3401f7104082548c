"""``tritonscale`` command line: ``serve`` and ``check-config``, plus plugin commands.

Plugin commands (``tritonscale simulate``, ...) are found through the ``tritonscale.commands``
entry-point group and loaded only when asked for: the service never imports the simulator or
the harness, and an install without them (the container image) says what to install.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from adapter.config import Config, ConfigError, load_config, parse_listen, parse_target_flag
from adapter.event_loop import DEFAULT_EVENT_LOOP, EVENT_LOOPS, run
from adapter.kube.tls_names import GO_TLS_VERSIONS


def _serve_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="scrape Triton targets and serve external.metrics.k8s.io/v1beta1 over HTTPS",
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config file (optional; every setting with its default: "
        "manifests/base/config.yaml; check one with `tritonscale check-config FILE`); the "
        "flags below override it",
    )
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="HTTPS address to serve on (default 0.0.0.0:6443; 127.0.0.1:0 picks a free port)",
    )
    serve.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="URL[,label=value...]",
        help="a static Triton /metrics target; repeatable; `kind=dcgm` for dcgm-exporter",
    )
    serve.add_argument(
        "--tls-cert-file",
        metavar="FILE",
        help="PEM serving certificate (with --tls-private-key-file); default: a self-signed "
        "one made at start",
    )
    serve.add_argument(
        "--tls-private-key-file",
        metavar="FILE",
        help="PEM private key of --tls-cert-file",
    )
    serve.add_argument(
        "--auth-mode",
        choices=["none", "delegated"],
        help="delegated: front-proxy certificates, TokenReview and SubjectAccessReview, as "
        "aggregated API servers do (default from the config: none)",
    )
    serve.add_argument(
        "--requestheader-client-ca-file",
        metavar="FILE",
        help="front-proxy CA (default in delegated mode: read the ConfigMap "
        "kube-system/extension-apiserver-authentication)",
    )
    serve.add_argument(
        "--requestheader-allowed-names",
        metavar="NAME[,NAME...]",
        help="client-certificate CNs allowed to assert X-Remote-User; empty: any CN",
    )
    serve.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="Kubernetes API for pod discovery and TokenReview/SubjectAccessReview "
        "(default: in-cluster, else $KUBECONFIG or ~/.kube/config)",
    )
    serve.add_argument(
        "--keda-scaler-listen",
        metavar="HOST:PORT",
        help="also serve KEDA's external scaler (gRPC over TLS) here; the rest of its settings "
        "are the config's keda_scaler section",
    )
    serve.add_argument(
        "--scrape-interval",
        type=float,
        metavar="SECONDS",
        help="seconds between two scrapes of each target (default 1)",
    )
    serve.add_argument(
        "--api-process",
        action="store_const",
        const=True,
        help="server.api_process: answer the metrics APIs from a process of their own, fed "
        "every snapshot (the main process then serves its page and /metrics on --main-listen)",
    )
    serve.add_argument(
        "--main-listen",
        metavar="HOST:PORT",
        help="server.main_listen: the main process's address with --api-process (default "
        "0.0.0.0:6444)",
    )
    serve.add_argument(
        "--event-loop",
        choices=list(EVENT_LOOPS),
        default=DEFAULT_EVENT_LOOP,
        help="uvloop (default; asyncio's loop where uvloop is not installed) or asyncio",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default info: one line per state change",
    )
    serve.add_argument(
        "--log-format",
        choices=["json", "text"],
        help="json (default, one object per line) or text for a terminal",
    )
    _generic_apiserver_flags(serve)


def _generic_apiserver_flags(serve: Any) -> None:
    """The Go generic apiserver's flags, each equal to one config setting (README: "Flags of
    the Go apiserver"), so manifests written for metrics-server or prometheus-adapter carry
    over."""
    go = serve.add_argument_group("flags of the Go generic apiserver")
    go.add_argument(
        "--secure-port",
        type=int,
        metavar="PORT",
        help="HTTPS port: the port of `listen` (0: any free port, not off as in Go)",
    )
    go.add_argument(
        "--bind-address", metavar="IP", help="address to listen on: the host of `listen`"
    )
    go.add_argument("--tls-min-version", choices=list(GO_TLS_VERSIONS), help="tls.min_version")
    go.add_argument(
        "--tls-cipher-suites", metavar="NAME[,NAME...]", help="tls.cipher_suites (Go's names)"
    )
    go.add_argument("--client-ca-file", metavar="FILE", help="auth.client_ca_file")
    go.add_argument(
        "--requestheader-username-headers",
        metavar="HEADER[,HEADER...]",
        help="auth.requestheader_username_headers",
    )
    go.add_argument(
        "--requestheader-group-headers",
        metavar="HEADER[,HEADER...]",
        help="auth.requestheader_group_headers",
    )
    go.add_argument(
        "--requestheader-extra-headers-prefix",
        metavar="PREFIX[,PREFIX...]",
        help="auth.requestheader_extra_headers_prefix",
    )
    go.add_argument(
        "--authentication-kubeconfig", metavar="FILE", help="auth.authentication_kubeconfig"
    )
    go.add_argument(
        "--authorization-kubeconfig", metavar="FILE", help="auth.authorization_kubeconfig"
    )
    go.add_argument(
        "--authentication-skip-lookup",
        nargs="?",
        const="true",
        type=_go_bool,
        metavar="true|false",
        help="auth.authentication_skip_lookup",
    )
    go.add_argument(
        "--authorization-always-allow-paths",
        metavar="PATH[,PATH...]",
        help="auth.always_allow_paths",
    )


def _go_bool(text: str) -> bool:
    """A Go boolean flag's value (``strconv.ParseBool``)."""
    lowered = text.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _names(text: str) -> list[str]:
    """A Go string-slice flag: comma separated, blanks dropped (empty: an empty list)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def serve_config(args: argparse.Namespace) -> Config:
    """The config ``serve`` runs with: the file, then the flags (``--secure-port`` and
    ``--bind-address`` replace one half of ``listen`` each)."""
    overrides = _overrides(args)
    config = load_config(args.config, overrides)
    if args.secure_port is None and args.bind_address is None:
        return config
    if args.listen:
        raise ValueError(
            "--listen and --secure-port/--bind-address name the same address: give one or the other"
        )
    host, port = parse_listen(config.listen)
    if args.bind_address is not None:
        host = args.bind_address.strip("[]") or None
    if args.secure_port is not None:
        port = args.secure_port
    bracketed = f"[{host}]" if host is not None and ":" in host else (host or "")
    return load_config(args.config, {**overrides, "listen": f"{bracketed}:{port}"})


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.listen:
        overrides["listen"] = args.listen
    if args.target:
        overrides["targets"] = [parse_target_flag(t) for t in args.target]
    tls: dict[str, Any] = {}
    if args.tls_cert_file or args.tls_private_key_file:
        tls["cert_file"] = args.tls_cert_file
        tls["private_key_file"] = args.tls_private_key_file
    if args.tls_min_version:
        tls["min_version"] = args.tls_min_version
    if args.tls_cipher_suites is not None:
        tls["cipher_suites"] = _names(args.tls_cipher_suites)
    if tls:
        overrides["tls"] = tls
    if args.keda_scaler_listen:
        overrides["keda_scaler"] = {"listen": args.keda_scaler_listen}
    if args.scrape_interval is not None:
        overrides["scrape"] = {"interval_seconds": args.scrape_interval}
    server: dict[str, Any] = {}
    if args.api_process:
        server["api_process"] = True
    if args.main_listen:
        server["main_listen"] = args.main_listen
    if server:
        overrides["server"] = server
    auth: dict[str, Any] = {}
    if args.auth_mode:
        auth["mode"] = args.auth_mode
    if args.requestheader_client_ca_file:
        auth["requestheader_client_ca_file"] = args.requestheader_client_ca_file
    if args.requestheader_allowed_names is not None:
        names = args.requestheader_allowed_names.split(",")
        auth["requestheader_allowed_names"] = [n.strip() for n in names if n.strip()]
    if args.kubeconfig:
        auth["kubeconfig"] = args.kubeconfig
        overrides["discovery"] = {"kubeconfig": args.kubeconfig}
    for flag, setting in (
        ("requestheader_username_headers", "requestheader_username_headers"),
        ("requestheader_group_headers", "requestheader_group_headers"),
        ("requestheader_extra_headers_prefix", "requestheader_extra_headers_prefix"),
        ("authorization_always_allow_paths", "always_allow_paths"),
    ):
        value = getattr(args, flag)
        if value is not None:
            auth[setting] = _names(value)
    for flag in ("client_ca_file", "authentication_kubeconfig", "authorization_kubeconfig"):
        if getattr(args, flag):
            auth[flag] = getattr(args, flag)
    if args.authentication_skip_lookup is not None:
        auth["authentication_skip_lookup"] = args.authentication_skip_lookup
    if auth:
        overrides["auth"] = auth
    log: dict[str, str] = {}
    if args.log_level:
        log["level"] = args.log_level
    if args.log_format:
        log["format"] = args.log_format
    if log:
        overrides["log"] = log
    return overrides


PLUGIN_GROUP = "tritonscale.commands"
"""Entry-point group of the commands other packages add (``simulate`` and ``replay``)."""


def plugin_commands() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=PLUGIN_GROUP)}


def _run_plugin(entry: EntryPoint, argv: list[str]) -> int:
    try:
        command: Callable[[list[str]], int] = entry.load()
    except ModuleNotFoundError as err:
        print(
            f"tritonscale {entry.name} needs the `sim` extra ({err.name} is missing): "
            "pip install 'tritonscale[sim]'",
            file=sys.stderr,
        )
        return 2
    return command(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    plugins = plugin_commands()
    if argv and argv[0] in plugins:
        return _run_plugin(plugins[argv[0]], argv[1:])

    parser = argparse.ArgumentParser(
        prog="tritonscale",
        description="Predictive Kubernetes external-metrics adapter for Triton Inference Server.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    check = sub.add_parser(
        "check-config",
        help="validate a config file: FILE:LINE: field: what is wrong (exit 1), or ok",
    )
    check.add_argument("file", help="the YAML config file `tritonscale serve --config` reads")
    for name in sorted(plugins):
        sub.add_parser(name, help=f"see `tritonscale {name} --help`", add_help=False)
    api = sub.add_parser(
        "api-process",
        help="internal: the API process `serve` starts with server.api_process (its config "
        "comes through the feed)",
    )
    api.add_argument("--feed-fd", type=int, required=True, help="the snapshot feed's socket")
    api.add_argument("--event-loop", choices=list(EVENT_LOOPS), default=DEFAULT_EVENT_LOOP)
    args = parser.parse_args(argv)

    if args.command == "api-process":
        from adapter.api_process import serve_api_process

        return run(serve_api_process(args.feed_fd), args.event_loop)

    if args.command == "check-config":
        try:
            config = load_config(args.file)
        except ConfigError as err:
            print(err, file=sys.stderr)
            return 1
        from adapter.service import check_files

        files = check_files(config)
        for problem in files.problems:
            print(f"{args.file}: {problem}", file=sys.stderr)
        for absent in files.absent:
            print(f"{args.file}: note: {absent}; serve needs it where it runs", file=sys.stderr)
        if files.problems:
            return 1
        print(f"{args.file}: ok ({len(config.targets)} targets)")
        if not config.model_fields_set:
            print(
                f"{args.file}: warning: the file sets nothing (every setting is its default): no "
                "`targets:` and no `discovery: {kubernetes: [...]}`, so `tritonscale serve` "
                "will need --target URL to have anything to scrape",
                file=sys.stderr,
            )
        return 0

    try:
        config = serve_config(args)
    except (ConfigError, ValueError) as err:
        print(f"tritonscale serve: {err}", file=sys.stderr)
        return 2
    from adapter.logging_setup import configure_logging
    from adapter.service import serve_forever

    configure_logging(config.log.level, config.log.format)
    if not config.targets and not config.discovery.kubernetes and not config.sources.prometheus:
        print(
            "tritonscale serve: no targets: give --target URL, `targets:`, "
            "`discovery: {kubernetes: [...]}` or `sources: {prometheus: [...]}` in the config",
            file=sys.stderr,
        )
        return 2
    from adapter.kube.client import KubernetesClientError
    from adapter.kube.reviews import CAFileError, RequestHeaderConfigError
    from adapter.listener import StartupError
    from adapter.promsource import PrometheusSourceError

    try:
        run(serve_forever(config), args.event_loop)
    except (
        RequestHeaderConfigError,
        KubernetesClientError,
        StartupError,
        CAFileError,
        PrometheusSourceError,
    ) as err:
        print(f"tritonscale serve: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
