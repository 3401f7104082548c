"""Files that Kubernetes mounts from Secrets and ConfigMaps, re-read when they change.

The kubelet's atomic writer never rewrites a mounted file in place: it writes a new
timestamped directory, points the ``..data`` symlink at it (one ``rename``), and each
visible name (``tls.crt``) is a symlink through ``..data``. A change is therefore a new
inode behind the same path, with a new mtime; a file edited in place (``cp``, an editor, a
sidecar) keeps its inode and changes its mtime or size. :class:`MountedFiles` notices both
by comparing ``os.stat`` of the resolved files (device, inode, mtime, size) and then confirms
with a hash of the content, so a touched but unchanged file is not a change.

Files that belong together (a certificate and its key) are read as one version: if any stat
changes while they are read (a swap landed between the two reads), the read is discarded and
retried at the next poll.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FileStat", "MountedFiles"]

_READ_ATTEMPTS = 5
"""A swap takes one rename; five reads in a row straddling one means something is wrong."""


@dataclass(frozen=True, slots=True)
class FileStat:
    """What identifies one version of a file behind a path (symlinks followed)."""

    device: int
    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: str) -> FileStat:
        status = os.stat(path)  # follows tls.crt -> ..data/tls.crt -> ..<timestamp>/tls.crt
        return cls(status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size)


class MountedFiles:
    """A group of files read together; :meth:`poll` returns their contents when they changed.

    ``read()`` reads the current version (raising OSError naming nothing: callers name the
    setting). ``poll()`` is cheap while nothing changed (one ``stat`` per file) and returns
    the new contents once per distinct content, whether or not the caller could use it: a
    certificate whose key has not arrived yet is tried again when the key changes, not at
    every poll.
    """

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = tuple(paths)
        self._stats: tuple[FileStat, ...] | None = None
        self._digest: bytes | None = None

    def _read_consistent(self) -> tuple[tuple[FileStat, ...], tuple[bytes, ...]] | None:
        before = tuple(FileStat.of(path) for path in self.paths)
        contents = []
        for path in self.paths:
            with open(path, "rb") as handle:
                contents.append(handle.read())
        after = tuple(FileStat.of(path) for path in self.paths)
        if before != after:
            return None  # a swap landed while reading: not one version
        return after, tuple(contents)

    def read(self) -> tuple[bytes, ...]:
        """The files' current contents (one version); remembered as seen."""
        for _attempt in range(_READ_ATTEMPTS):
            result = self._read_consistent()
            if result is not None:
                break
        else:
            raise OSError(f"{', '.join(self.paths)} kept changing while being read")
        stats, contents = result
        self._stats, self._digest = stats, _digest(contents)
        return contents

    def poll(self) -> tuple[bytes, ...] | None:
        """New contents if any file changed since the last read or poll, else None.

        Raises OSError when a file cannot be stat'ed or read (e.g. removed mid-swap); the
        caller keeps what it has and polls again later.
        """
        stats = tuple(FileStat.of(path) for path in self.paths)
        if stats == self._stats:
            return None
        result = self._read_consistent()
        if result is None:
            return None
        stats, contents = result
        self._stats = stats
        digest = _digest(contents)
        if digest == self._digest:
            return None  # touched or re-linked, same bytes
        self._digest = digest
        return contents


def _digest(contents: tuple[bytes, ...]) -> bytes:
    hasher = hashlib.sha256()
    for content in contents:
        hasher.update(len(content).to_bytes(8, "big"))
        hasher.update(content)
    return hasher.digest()
