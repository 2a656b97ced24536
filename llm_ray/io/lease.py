"""One driver per sweep directory: a lease file with its owner and a heartbeat.

Two drivers on one sweep directory would plan and train the same cells at once and overwrite each
other's plan.json, results and predictions.json. The first driver writes `<sweep_dir>/driver.lease`
({owner, host, pid, started, heartbeat}) and refreshes its heartbeat from a daemon thread; a second
one finds a fresh lease and stops with a message naming the owner. A lease whose heartbeat is older
than `stale_s` belongs to a driver that died (killed, node gone), and so does one whose process on
this host is gone: either is taken over, so a killed sweep re-run at once resumes. The lease is a
write-then-read-back claim, not a consensus lock: two drivers starting within the same second on an
object store could both win, which the owner check after writing narrows to that race.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from llm_ray.io import storage

LEASE = "driver.lease"
HEARTBEAT_S = 20.0
STALE_S = 120.0


class LeaseHeld(ValueError):
    """Another live driver holds the sweep directory (a user error: one line, exit 2)."""


def _dead_here(held: dict) -> bool:
    """Whether the lease's driver ran on this host and its process is gone (killed, crashed): then
    the lease is taken over at once instead of after `stale_s`."""
    if held.get("host") != socket.gethostname() or not isinstance(held.get("pid"), int):
        return False
    try:
        os.kill(held["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class DriverLease:
    """`with DriverLease(sweep_dir):` holds the sweep directory for this process."""

    def __init__(self, sweep_dir: str, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S):
        self.url = storage.join(sweep_dir, LEASE)
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread = None

    def _read(self):
        if not storage.exists(self.url):
            return None
        fs, path = storage.fs_and_path(self.url)
        try:
            with fs.open(path, "rb") as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return None  # torn or vanished between the two calls: nobody holds it

    def _write(self, started: float) -> None:
        storage.write_json(self.url, {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                                      "started": started, "heartbeat": time.time()})

    def acquire(self) -> "DriverLease":
        held = self._read()
        age = time.time() - float(held.get("heartbeat", 0)) if held else None
        if held and held.get("owner") != self.owner and age < self.stale_s and not _dead_here(held):
            raise LeaseHeld(
                f"{self.url}: another driver ({held.get('host')} pid {held.get('pid')}) is running this sweep "
                f"(heartbeat {age:.0f} s ago): wait for it to finish, or use another sweep.name; if that driver "
                f"is dead, the lease expires {self.stale_s:.0f} s after its last heartbeat (or delete the file).")
        self._started = time.time()
        self._write(self._started)
        if (self._read() or {}).get("owner") != self.owner:
            raise LeaseHeld(f"{self.url}: another driver claimed this sweep at the same moment; re-run later.")
        self._thread = threading.Thread(target=self._beat, name="llm-ray-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._write(self._started)
            except OSError:
                pass  # storage briefly unreachable: the next beat retries, the lease only goes stale

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            held = self._read()
            if held and held.get("owner") == self.owner:
                fs, path = storage.fs_and_path(self.url)
                fs.rm(path)

    def __enter__(self) -> "DriverLease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
