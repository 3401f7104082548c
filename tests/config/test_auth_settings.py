"""The ``auth:`` settings: errors name the field; a CA file configures the front proxy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapter.config import ConfigError, load_config

# --- configuration and flags ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "auth:\n  requestheader_client_ca_file: /ca.crt\n",
            "auth: requestheader_client_ca_file: only used with mode: delegated",
        ),
        (
            "auth:\n  mode: delegated\n  requestheader_allowed_names: [front-proxy-client]\n",
            "auth: requestheader_allowed_names: only used with requestheader_client_ca_file",
        ),
        (
            "auth:\n  mode: delegated\n  always_allow_paths: [healthz]\n",
            "auth.always_allow_paths: 'healthz' must be an absolute path",
        ),
        ("auth:\n  mode: strict\n", "auth.mode: Input should be 'none' or 'delegated'"),
        (
            "auth:\n  mode: delegated\n  requestheader_client_ca_file: /ca.crt\n"
            "  requestheader_username_headers: []\n",
            "auth.requestheader_username_headers: ",
        ),
    ],
)
def test_auth_config_errors_name_the_field(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("listen: 0.0.0.0:6443\n" + text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    pattern = re.compile(rf"^{re.escape(str(path))}:\d+: {re.escape(problem)}")
    assert any(pattern.match(p) for p in caught.value.problems), caught.value.problems


def test_auth_config_from_file_with_ca(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "auth:\n  mode: delegated\n  requestheader_client_ca_file: /etc/fp/ca.crt\n"
        "  requestheader_allowed_names: [front-proxy-client, aggregator]\n"
        "  authorization_cache_seconds: 5\n"
    )
    auth = load_config(path).auth
    assert auth.requestheader_allowed_names == ("front-proxy-client", "aggregator")
    assert auth.authorization_cache_seconds == 5
    assert auth.requestheader_username_headers == ("X-Remote-User",)
