"""Port sandboxes kept warm between requests, so a tenant's next verification skips ``port_start``.

A :class:`~kernels.engine.verify.PortSandbox` started with a request hides its interpreter,
numpy/numba import and numba warm-up (about 0.8 s) behind parse, analyse and generate, which take
tens of milliseconds for a small file: there most of ``port_start`` stays on the critical path.
A spare started after a verification, for the same tenant's next one, hides all of it.

- **Who asks.** The service (:mod:`kernels.result_cache`) calls :meth:`SparePorts.prepare` after
  a verification, in a long-running server process only; the pipeline takes a spare
  (:meth:`SparePorts.take`) before starting a port sandbox of its own.
- **Whose it is.** A spare is keyed by the device and the numba cache directory (one tenant's)
  it was started with, and only given to a verification with the same two. Nothing runs in it
  but the harness's warm-up until a port is given to it, and it runs one port.
- **How long.** Spares are started on this module's own thread, which lives as long as the
  process (bubblewrap's ``--die-with-parent`` follows the starting thread). At most ``keep`` are
  held (the least recently prepared goes first), each for at most ``idle_s``; a spare whose child
  died or whose cache directory was replaced meanwhile is dropped instead of used. All are ended
  at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time

from kernels.engine.sandbox import SandboxUnavailable
from kernels.engine.verify import MAX_VERIFY_S, PortSandbox

logger = logging.getLogger(__name__)

#: How long a spare waits for its tenant's next verification before it is ended.
IDLE_S = 300.0
_SWEEP_S = 15.0

_Key = tuple[str, str]


def _key(device: str, numba_cache_dir: str | os.PathLike[str] | None) -> _Key:
    return device, os.path.realpath(os.fspath(numba_cache_dir)) if numba_cache_dir else ""


class SparePorts:
    """At most ``keep`` warm port sandboxes, one per (device, numba cache directory)."""

    def __init__(self, *, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._spares: dict[_Key, tuple[PortSandbox, float]] = {}  # -> (sandbox, prepared at)
        self._wanted: queue.Queue[tuple[str, str | os.PathLike[str] | None, int] | None] = (
            queue.Queue()
        )
        self._thread: threading.Thread | None = None

    def take(
        self, *, device: str, numba_cache_dir: str | os.PathLike[str] | None
    ) -> PortSandbox | None:
        """The spare for exactly this device and cache directory (it may still be warming up),
        or None."""
        with self._lock:
            entry = self._spares.pop(_key(device, numba_cache_dir), None)
        if entry is None:
            return None
        port = entry[0]
        if not port.usable():
            port.close()
            return None
        port.claim()
        return port

    def prepare(
        self, *, device: str, numba_cache_dir: str | os.PathLike[str] | None, keep: int
    ) -> None:
        """Have a spare ready for the next verification with this device and cache directory
        (started in the background; nothing when ``keep`` is 0)."""
        if keep <= 0:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="spare-ports", daemon=True)
                self._thread.start()
        self._wanted.put((device, numba_cache_dir, keep))

    def held(self) -> int:
        with self._lock:
            return len(self._spares)

    def close(self) -> None:
        """End every spare (they run nothing; their work directories are removed)."""
        with self._lock:
            spares, self._spares = list(self._spares.values()), {}
        for port, _ in spares:
            port.close()

    def _serve(self) -> None:
        while True:
            try:
                wanted = self._wanted.get(timeout=_SWEEP_S)
            except queue.Empty:
                wanted = None
            self._expire()
            if wanted is not None:
                self._start(*wanted)

    def _start(
        self, device: str, numba_cache_dir: str | os.PathLike[str] | None, keep: int
    ) -> None:
        key = _key(device, numba_cache_dir)
        with self._lock:
            if key in self._spares:
                return
        try:
            port = PortSandbox.start(
                device=device, numba_cache_dir=numba_cache_dir, timeout_s=self.idle_s + MAX_VERIFY_S
            )
        except (SandboxUnavailable, OSError) as exc:
            logger.warning("no spare port sandbox: %s", exc)
            return
        with self._lock:
            self._spares[key] = (port, time.monotonic())
            by_age = sorted(self._spares.items(), key=lambda item: item[1][1])
            evicted = [self._spares.pop(k)[0] for k, _ in by_age[: max(0, len(by_age) - keep)]]
        for old in evicted:
            old.close()

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            old = [k for k, (_, at) in self._spares.items() if now - at > self.idle_s]
            expired = [self._spares.pop(k)[0] for k in old]
        for port in expired:
            port.close()


#: The process's spares.
SPARE_PORTS = SparePorts()
atexit.register(SPARE_PORTS.close)
