"""MountedFiles notices Secret-volume swaps and in-place edits, once per content, and never
a half-swapped pair."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapter.kube.mounted import MountedFiles
from tests.support.rotation_support import SecretVolume


def test_a_secret_volume_swap_is_seen_once(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "tls", {"tls.crt": b"cert 1", "tls.key": b"key 1"})
    files = MountedFiles((volume.path("tls.crt"), volume.path("tls.key")))
    assert files.read() == (b"cert 1", b"key 1")
    assert files.poll() is None
    volume.write({"tls.crt": b"cert 2", "tls.key": b"key 2"})
    assert files.poll() == (b"cert 2", b"key 2")
    assert files.poll() is None


def test_a_swap_with_the_same_content_is_not_a_change(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "tls", {"ca.crt": b"ca"})
    files = MountedFiles((volume.path("ca.crt"),))
    files.read()
    volume.write({"ca.crt": b"ca"})  # new inode, same bytes (e.g. a resync)
    assert files.poll() is None


def test_an_in_place_edit_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "ca.crt"
    path.write_bytes(b"one")
    files = MountedFiles((str(path),))
    files.read()
    path.write_bytes(b"two, longer")
    assert files.poll() == (b"two, longer",)


def test_a_touch_is_not_a_change(tmp_path: Path) -> None:
    path = tmp_path / "ca.crt"
    path.write_bytes(b"same")
    files = MountedFiles((str(path),))
    files.read()
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert files.poll() is None


def test_a_pair_written_one_file_at_a_time_is_reported_at_each_step(tmp_path: Path) -> None:
    """A writer that is not atomic: the caller sees (new cert, old key), fails to use it,
    and gets the complete pair at the next change rather than never."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(b"cert 1")
    key.write_bytes(b"key 1")
    files = MountedFiles((str(cert), str(key)))
    files.read()
    cert.write_bytes(b"cert 2, new")
    assert files.poll() == (b"cert 2, new", b"key 1")
    assert files.poll() is None  # not reported again while nothing changes
    key.write_bytes(b"key 2, new")
    assert files.poll() == (b"cert 2, new", b"key 2, new")


def test_a_missing_file_raises_oserror_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "ca.crt"
    path.write_bytes(b"x")
    files = MountedFiles((str(path),))
    files.read()
    path.unlink()
    with pytest.raises(OSError) as raised:
        files.poll()
    assert raised.value.filename == str(path)
