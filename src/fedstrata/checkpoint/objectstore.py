"""The object-storage tier through fsspec (S3 and S3-compatible servers via s3fs).

A save uploads the whole checkpoint under a temporary key, then renames it
(``fs.mv``: on S3 a server-side copy and a delete). An S3 PUT, a multipart upload and a
copy each publish an object whole or not at all, so a reader listing committed keys
never sees a partial checkpoint; the SHA-256 in the header is checked on every load
regardless. Listings bypass fsspec's directory cache, so a standby process sees the
active one's new checkpoints.

``storage_options`` (``endpoint_url``, ``key``, ``secret``, ...) go to the fsspec
filesystem and nowhere else: they are never logged or put in error messages.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from fedstrata.checkpoint.filestore import FileStore
from fedstrata.errors import CheckpointError, MissingDependencyError

__all__ = ["FsspecBlobs", "open_object_store"]


@contextmanager
def _as_os_error() -> Iterator[None]:
    """Backend errors (botocore's connection errors are not OSErrors) as OSError."""
    try:
        yield
    except OSError:
        raise
    except Exception as exc:
        raise OSError(f"{type(exc).__name__}: {exc}") from exc


class FsspecBlobs:
    """Named byte strings under ``root`` (``bucket/prefix``) of an fsspec filesystem."""

    def __init__(self, fs: Any, root: str, url: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def write_temp(self, key: str, chunks: Sequence[bytes]) -> None:
        with _as_os_error(), self.fs.open(self._path(key), "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)

    def commit(self, temp: str, key: str) -> None:
        with _as_os_error():
            self.fs.mv(self._path(temp), self._path(key))

    def read(self, key: str) -> bytes:
        with _as_os_error():
            data: bytes = self.fs.cat_file(self._path(key))
        return data

    def read_head(self, key: str, size: int) -> bytes:
        with _as_os_error():
            data: bytes = self.fs.cat_file(self._path(key), start=0, end=size)
        return data

    def names(self) -> list[str]:
        try:
            with _as_os_error():
                self.fs.invalidate_cache(self.root)
                paths = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in paths]

    def delete(self, key: str) -> None:
        try:
            with _as_os_error():
                self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass


def _filesystem(url: str, options: Mapping[str, Any]) -> tuple[Any, str]:
    try:
        import fsspec  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingDependencyError(
            "fsspec", "fedstrata[s3]", "the object-storage checkpoint tier"
        ) from exc
    try:
        fs, root = fsspec.core.url_to_fs(url, **dict(options))
    except ImportError as exc:
        package = "s3fs" if url.startswith(("s3://", "s3a://")) else "an fsspec backend"
        raise MissingDependencyError(
            package, "fedstrata[s3]", f"the object-storage checkpoint tier ({url})"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"cannot open object store {url}: {exc}") from exc
    return fs, str(root)


def open_object_store(
    url: str, keep: int | None = None, storage_options: Mapping[str, Any] | None = None
) -> FileStore:
    """An object-tier store at ``url`` (``s3://bucket/prefix`` or any fsspec URL).

    Raises:
        MissingDependencyError: s3fs (or the URL's fsspec backend) is not installed.
        CheckpointError: the URL cannot be opened.
    """
    fs, root = _filesystem(url, storage_options or {})
    if not root.strip("/"):
        raise CheckpointError(f"object store URL {url!r} names no bucket")
    return FileStore("object", FsspecBlobs(fs, root, url), keep)
