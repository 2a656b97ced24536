"""Small fsspec helpers: every result, record and report goes through one storage URL.

Local absolute paths, file:// and s3:// (credentials and endpoint from the environment, e.g.
AWS_ENDPOINT_URL for an S3-compatible server) all work the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from typing import Any, Optional

import fsspec

from llm_ray.core.secrets import redact_text, secret_values
from fsspec.implementations.local import LocalFileSystem


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])


def fs_and_path(url: str):
    return fsspec.core.url_to_fs(url)


def exists(url: str) -> bool:
    """Whether the file exists now. Resume decisions rest on it (a finished cell, a branch point a
    worker wrote), so it never answers from a cached listing: s3fs keeps directory listings in its
    dircache, and a file another node wrote after this process listed its folder stays invisible
    until the cache is dropped."""
    fs, path = fs_and_path(url)
    fs.invalidate_cache(path)
    return fs.exists(path)


def write_bytes_atomic(url: str, data) -> None:
    """The one way llm-ray writes a file: to a temporary sibling, then moved into place, so a crash
    never leaves a torn file and a reader sees the old file or the new one. `data` is any bytes-like
    object (a numpy array's memoryview too). On object stores a single PUT is already atomic."""
    fs, path = fs_and_path(url)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        with fs.open(path, "wb") as f:
            f.write(data)


def download_atomic(url: str, local_path: str) -> None:
    """Copy a (remote) file to a local path the same way: streamed into a temporary sibling, then
    moved into place, so concurrent readers on a node see no partial copy."""
    fs, path = fs_and_path(url)
    os.makedirs(os.path.dirname(local_path) or ".", exist_ok=True)
    tmp = f"{local_path}.tmp-{uuid.uuid4().hex}"
    fs.get_file(path, tmp)
    os.replace(tmp, local_path)


def upload_dir(local_dir: str, url: str) -> None:
    """Copy every file under `local_dir` to the same relative path under `url` (files already there
    are replaced; others are kept, so several ranks can each add their own files to one directory).
    Not atomic as a whole: a reader needs a marker written last (e.g. a trunk's point.json)."""
    fs, path = fs_and_path(url)
    for root, _, files in os.walk(local_dir):
        rel = os.path.relpath(root, local_dir)
        target = path if rel == "." else join(path, *rel.split(os.sep))
        fs.makedirs(target, exist_ok=True)
        for name in files:
            fs.put_file(os.path.join(root, name), join(target, name))


@contextlib.contextmanager
def local_copy(url: str):
    """A local directory holding what `url` holds: the directory itself when it is local, else a
    temporary download removed afterwards."""
    fs, path = fs_and_path(url)
    if isinstance(fs, LocalFileSystem):
        yield path
        return
    tmp = tempfile.mkdtemp(prefix="llm-ray-copy-")
    try:
        for src in fs.find(path):
            dst = os.path.join(tmp, *src[len(path):].strip("/").split("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            fs.get_file(src, dst)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(url: str, obj: Any) -> None:
    """`obj` as JSON, every string in it redacted (URL userinfo, known key shapes, the values of the
    environment's credentials: llm_ray.core.secrets), so no record carries a secret."""
    clean = scrub_values(obj, secret_values(os.environ))
    write_bytes_atomic(url, json.dumps(clean, indent=2, sort_keys=True, default=float).encode())


def scrub_values(obj: Any, secrets: tuple) -> Any:
    if isinstance(obj, dict):
        return {k: scrub_values(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_values(v, secrets) for v in obj]
    return redact_text(obj, secrets) if isinstance(obj, str) else obj


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


def endpoint_from_env() -> Optional[str]:
    """The S3-compatible endpoint botocore would use (AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def ray_storage(url: str) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for Ray Train's and Ray Tune's RunConfig.

    Ray writes checkpoints and experiment state with pyarrow, our own records go through fsspec
    (s3fs); both must reach the same server. Local paths and s3:// on AWS itself go to Ray as
    they are (`storage_filesystem=None`: Ray resolves them). With an S3-compatible endpoint in the
    environment (MinIO, Ceph, moto), `s3://bucket/prefix` becomes `("bucket/prefix",
    pyarrow.fs.S3FileSystem(endpoint_override=host:port, scheme=http|https))`.

    Credentials are never passed here: pyarrow reads them from the environment or the AWS config
    itself, so they are not pickled into Ray's actors nor written into experiment state.
    """
    endpoint = endpoint_from_env()
    if not url.startswith(("s3://", "s3a://")) or not endpoint:
        return url, None
    from urllib.parse import urlparse

    import pyarrow.fs

    parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    fs = pyarrow.fs.S3FileSystem(endpoint_override=parsed.netloc, scheme=parsed.scheme,
                                 region=os.environ.get("AWS_REGION")
                                 or os.environ.get("AWS_DEFAULT_REGION"))
    return url.split("://", 1)[1].rstrip("/"), fs
