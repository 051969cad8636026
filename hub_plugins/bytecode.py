"""The compiled form of a standard-library script the hub starts many times: the lifeline, once
per server (``lifeline.py``).

``python -I -S script.py`` compiles the script at every start, since a script run as ``__main__``
is never cached: 2.2 ms of CPU of the lifeline's 12.7 (measured on 2 cores), paid by every server
while the hub shares the cores with the others starting. Python runs a ``.pyc`` named on its
command line as it is, without a look at the source, so the hub names one only when it certainly
is the source's: the file Python's import system keeps in ``__pycache__``, its header naming
this interpreter's bytecode and the source's size and modification time as they are now, and
readable by whoever may read the source (a server's lifeline may start as the server's user).
The hub writes that file itself where it is missing or stale (also where
``PYTHONDONTWRITEBYTECODE`` keeps imports from writing it), once per process. Where it cannot,
the source runs, as before.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import struct
import sys

_tried: set[tuple] = set()  # (source, mtime, size) this process has written the bytecode of, or tried to


def runnable(source: str, python: str = sys.executable) -> str:
    """What ``python -I -S`` should run for ``source``: its current bytecode (written now if
    missing or stale and this process has not tried yet), else the source."""
    cached = current(source, python)
    if cached is not None or python != sys.executable:
        return cached or source
    try:
        st = os.stat(source)
    except OSError:
        return source
    if (source, st.st_mtime_ns, st.st_size) not in _tried:  # a source edited since is compiled again
        _tried.add((source, st.st_mtime_ns, st.st_size))
        try:  # timestamp-based whatever SOURCE_DATE_EPOCH says: current() reads only those
            py_compile.compile(source, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
        except (OSError, py_compile.PyCompileError):
            return source  # a read-only checkout: the source runs
        cached = current(source, python)
    return cached or source


def current(source: str, python: str = sys.executable) -> str | None:
    """The cached bytecode of ``source`` when ``python`` (this interpreter only) may run it in
    place of the source, else None."""
    if python != sys.executable:
        return None
    try:
        cached = importlib.util.cache_from_source(source)
    except NotImplementedError:  # an interpreter without a cache tag
        return None
    try:
        src, pyc = os.stat(source), os.stat(cached)
        src_dir, pyc_dir = os.stat(os.path.dirname(source)), os.stat(os.path.dirname(cached))
        with open(cached, "rb") as f:
            header = f.read(16)
    except OSError:
        return None
    if not fresh(header, importlib.util.MAGIC_NUMBER, src.st_mtime, src.st_size):
        return None
    if not (readable_as(src.st_mode, pyc.st_mode, 0o044) and readable_as(src_dir.st_mode, pyc_dir.st_mode, 0o055)):
        return None
    return cached


def fresh(header: bytes, magic: bytes, mtime: float, size: int) -> bool:
    """Whether a ``.pyc`` header (PEP 552: magic, flags, source mtime, source size) is this
    interpreter's and was compiled from a source of this mtime and size. Hash-based ``.pyc``
    files (flags other than 0) are not taken: checking one means reading the whole source."""
    if len(header) < 16 or header[:4] != magic:
        return False
    flags, stamp, length = struct.unpack("<III", header[4:16])
    return flags == 0 and stamp == int(mtime) & 0xFFFFFFFF and length == size & 0xFFFFFFFF


def readable_as(source_mode: int, cached_mode: int, bits: int) -> bool:
    """Whether the group and others may do with the cached file (or its directory) whatever
    ``bits`` they may do with the source's."""
    return source_mode & bits & ~cached_mode == 0
