"""``listen: HOST:PORT``: parsed once, in the config, with errors that say how to write it."""

from __future__ import annotations

import pytest

from adapter.config import ListenAddressError, parse_listen


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:6443", ("127.0.0.1", 6443)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:6443", ("::1", 6443)),
        ("[::]:443", ("::", 443)),
        (":6443", (None, 6443)),
        ("localhost:8443", ("localhost", 8443)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str | None, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize(
    ("listen", "fragment"),
    [
        ("6443", "must be HOST:PORT"),
        ("host:", "must be HOST:PORT"),
        ("host:https", "must be HOST:PORT"),
        ("::1:6443", "brackets"),
        ("[nope]:1", "not an IPv6 address"),
        ("host:70000", "above 65535"),
    ],
)
def test_parse_listen_rejects_bad_addresses(listen: str, fragment: str) -> None:
    with pytest.raises(ListenAddressError, match=fragment):
        parse_listen(listen)
