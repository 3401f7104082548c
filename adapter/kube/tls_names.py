"""The Go apiserver's names for TLS versions and cipher suites, and OpenSSL's for them.

``--tls-min-version`` and ``--tls-cipher-suites`` take Go's names (component-base's
``cliflag.TLSVersion`` / ``cliflag.TLSCipherSuites``, the IANA names), so a manifest written for
a Go aggregated API server carries over. Python's ``ssl`` takes OpenSSL's names.

As in Go, the list applies to TLS 1.2 only: TLS 1.3 suites are not configurable, and naming
one is accepted and changes nothing. Go's *insecure* suites (RC4, 3DES, CBC with SHA-256, RSA
key exchange) are refused with a message saying so: Go accepts them with a warning; a new
server has no client that needs them.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "GO_CIPHER_SUITES",
    "GO_INSECURE_CIPHER_SUITES",
    "GO_TLS13_CIPHER_SUITES",
    "GO_TLS_VERSIONS",
    "cipher_suite_problem",
    "openssl_cipher_string",
]

GO_TLS_VERSIONS = ("VersionTLS12", "VersionTLS13")
"""Accepted ``--tls-min-version`` values (Go also has VersionTLS10/11; below 1.2 is refused)."""

GO_CIPHER_SUITES: dict[str, str] = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    # cliflag's aliases without the hash
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
}
"""Go's TLS 1.2 cipher suites (``tls.CipherSuites()``) -> OpenSSL names."""

GO_TLS13_CIPHER_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
"""Accepted and without effect, as in Go: TLS 1.3 always offers these three."""

GO_INSECURE_CIPHER_SUITES = frozenset(
    {
        "TLS_RSA_WITH_RC4_128_SHA",
        "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
        "TLS_RSA_WITH_AES_128_CBC_SHA",
        "TLS_RSA_WITH_AES_256_CBC_SHA",
        "TLS_RSA_WITH_AES_128_CBC_SHA256",
        "TLS_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
        "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
        "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    }
)
"""Go's ``tls.InsecureCipherSuites()``: refused here."""


def cipher_suite_problem(name: str) -> str | None:
    """Why ``name`` cannot be in ``--tls-cipher-suites``; None when it can."""
    if name in GO_CIPHER_SUITES or name in GO_TLS13_CIPHER_SUITES:
        return None
    if name in GO_INSECURE_CIPHER_SUITES:
        return f"{name} is one of Go's insecure cipher suites and is not offered"
    return f"unknown cipher suite {name!r}; one of: {', '.join(sorted(GO_CIPHER_SUITES))}"


def openssl_cipher_string(suites: Sequence[str]) -> str:
    """OpenSSL's cipher list for Go suite names (TLS 1.3 names dropped, order kept)."""
    names: list[str] = []
    for suite in suites:
        openssl_name = GO_CIPHER_SUITES.get(suite)
        if openssl_name is not None and openssl_name not in names:
            names.append(openssl_name)
    return ":".join(names)
