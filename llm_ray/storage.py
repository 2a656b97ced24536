"""Small fsspec helpers: every result, record and report goes through one storage URL.

Local absolute paths, file:// and s3:// (credentials and endpoint from the environment, e.g.
AWS_ENDPOINT_URL for an S3-compatible server) all work the same way.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import fsspec


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])


def fs_and_path(url: str):
    return fsspec.core.url_to_fs(url)


def exists(url: str) -> bool:
    fs, path = fs_and_path(url)
    return fs.exists(path)


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write to a temporary sibling, then move into place: a crash never leaves a torn file.
    (On object stores a single PUT is already atomic.)"""
    fs, path = fs_and_path(url)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if fs.protocol in ("file", "local") or "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        with fs.open(path, "wb") as f:
            f.write(data)


def write_json(url: str, obj: Any) -> None:
    write_bytes_atomic(url, json.dumps(obj, indent=2, sort_keys=True, default=float).encode())


def read_json(url: str) -> Any:
    fs, path = fs_and_path(url)
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def to_local_or_url(path: str) -> str:
    """Expand `~` and strip file:// so local paths are plain absolute paths."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    if "://" in path:
        return path.rstrip("/")
    return os.path.abspath(os.path.expanduser(path))
