"""The S3 backend of the blob store: ``s3://BUCKET[/PREFIX]`` (AWS S3, MinIO, Ceph, R2, moto).

Keys: ``PREFIX/sha256/ab/cdef…`` for blobs, ``PREFIX/uploads/<uuid>`` for staged large uploads.

Writing (one read pass over the source, the four hashes computed as the bytes go out):
- below ``multipart_threshold`` the file is read into memory while hashed, then PUT straight to
  its final key with ``x-amz-checksum-sha256`` set: S3 refuses the PUT unless the bytes it
  received hash to that, and a PUT is atomic, so the final key never holds a partial object;
- at or above it, a multipart upload to a staging key ``uploads/<uuid>`` (each part carries its
  own SHA-256, checked by the store), completed, then published with a server-side CopyObject to
  the final key asking the store for the copy's full SHA-256, compared with ours. A failure at
  any step aborts the multipart upload / deletes the staging key: nothing reaches the final key.
- every publish, even of bytes already stored, rewrites the final key, so its LastModified is
  fresh: gc's grace period then covers a blob about to be named by a new row;
- the upload is recorded in the database (``UploadLedger``: its staging key first, its sha256
  once known) before anything is published, and forgotten only after the caller committed its
  row (the end of ``writing()``), after one more check that the object is still there.

Reading: ``open`` streams the object; ``path_for`` fills the local read-through cache
(``blob_cache``) for readers that need a file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .blob_backends import BlobEntry, UploadLedger
from .blob_cache import BlobCache
from .blob_store import Progress, StoredBlob
from ..crashpoints import crashpoint
from ..errors import CatalogError, InvalidFile, NotFound
from .hashing import MultiHasher, is_sha256_hex

MIB = 1 << 20
DEFAULT_MULTIPART_THRESHOLD = 64 * MIB
DEFAULT_PART_SIZE = 16 * MIB
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
PARALLEL_PARTS = 4
DEFAULT_GRACE_SECONDS = 3600
DEFAULT_STALE_UPLOAD_SECONDS = 24 * 3600
READ_CHUNK = 8 * MIB
PUBLISH_ATTEMPTS = 5


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise CatalogError(f"{name}={raw[:40]!r} is not a whole number") from None
    if value < minimum:
        raise CatalogError(f"{name} must be at least {minimum}")
    return value


@dataclass
class _Pending:
    """An upload whose object is published but whose row may not be committed yet."""
    ledger_id: int | None
    final_key: str
    size: int
    staging_key: str | None = None
    data: bytes | None = None  # a small blob's bytes, to publish again if a gc raced it away


@dataclass
class S3Settings:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str | None = None  # "path", "virtual", "auto"
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    part_size: int = DEFAULT_PART_SIZE
    grace_seconds: int = DEFAULT_GRACE_SECONDS
    stale_upload_seconds: int = DEFAULT_STALE_UPLOAD_SECONDS
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str) -> "S3Settings":
        """``s3://BUCKET[/PREFIX]`` plus the standard settings: ``LORADEX_S3_ENDPOINT_URL`` or
        ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` (read by boto3 itself), the region and the
        credentials from the usual AWS chain, ``LORADEX_S3_ADDRESSING=path|virtual|auto``."""
        if not url.startswith("s3://"):
            raise CatalogError(f"not an s3:// location: {url[:200]!r}")
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket or len(bucket) > 63 or not all(c.isalnum() or c in "-._" for c in bucket):
            raise CatalogError(f"{url[:200]!r}: not a bucket name", hint="use s3://BUCKET[/PREFIX]")
        prefix = prefix.strip("/")
        if ".." in prefix.split("/") or len(prefix) > 512:
            raise CatalogError(f"{url[:200]!r}: the prefix must be a plain key prefix")
        addressing = os.environ.get("LORADEX_S3_ADDRESSING", "").strip().lower() or None
        if addressing not in (None, "path", "virtual", "auto"):
            raise CatalogError(f"LORADEX_S3_ADDRESSING={addressing!r}: use path, virtual or auto")
        threshold = _env_int("LORADEX_S3_MULTIPART_THRESHOLD", DEFAULT_MULTIPART_THRESHOLD, MIN_PART_SIZE)
        return cls(bucket=bucket, prefix=prefix,
                   endpoint_url=os.environ.get("LORADEX_S3_ENDPOINT_URL") or None,
                   region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
                   addressing_style=addressing, multipart_threshold=threshold,
                   part_size=_env_int("LORADEX_S3_PART_SIZE", min(DEFAULT_PART_SIZE, threshold), MIN_PART_SIZE),
                   grace_seconds=_env_int("LORADEX_GC_GRACE_SECONDS", DEFAULT_GRACE_SECONDS),
                   stale_upload_seconds=_env_int("LORADEX_BLOB_UPLOAD_STALE_SECONDS", DEFAULT_STALE_UPLOAD_SECONDS))

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


class S3BlobStore:
    """``BlobBackend`` over an S3 bucket (see the module docstring)."""

    shared = True

    def __init__(self, settings: S3Settings, *, home: Path, ledger: UploadLedger | None = None,
                 client=None, cache: BlobCache | None = None):
        self.settings = settings
        self.location = settings.url
        self.default_grace_seconds = settings.grace_seconds
        self.bucket = settings.bucket
        self.key_prefix = f"{settings.prefix}/" if settings.prefix else ""
        self.ledger = ledger
        self.cache = cache or BlobCache(Path(home) / "cache" / "blobs")
        self._client = client
        self._client_lock = threading.Lock()
        self._local = threading.local()

    @classmethod
    def from_url(cls, url: str, *, home: Path, ledger: UploadLedger | None = None) -> "S3BlobStore":
        return cls(S3Settings.from_url(url), home=home, ledger=ledger)

    @property
    def client(self):
        with self._client_lock:
            if self._client is None:
                self._client = _make_client(self.settings)
            return self._client

    # --- keys ---------------------------------------------------------------------------
    def key_for(self, sha256: str) -> str:
        if not is_sha256_hex(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
        return f"{self.key_prefix}sha256/{sha256[:2]}/{sha256[2:]}"

    def where(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{self.key_for(sha256)}"

    def _staging_key(self) -> str:
        return f"{self.key_prefix}uploads/{uuid.uuid4().hex}"

    def _sha_of_key(self, key: str) -> str | None:
        head = f"{self.key_prefix}sha256/"
        if not key.startswith(head):
            return None
        rest = key[len(head):]
        if len(rest) != 65 or rest[2] != "/":
            return None
        sha = rest[:2] + rest[3:]
        return sha if is_sha256_hex(sha) else None

    # --- reading ------------------------------------------------------------------------
    def _head(self, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise _s3_failure(exc, f"checking {key}") from None

    def size_of(self, sha256: str) -> int | None:
        try:
            head = self._head(self.key_for(sha256))
        except ValueError:
            return None
        return None if head is None else int(head["ContentLength"])

    def exists(self, sha256: str) -> bool:
        return self.size_of(sha256) is not None

    def open(self, sha256: str):
        """A streaming reader of the object (``read``, ``close``, a context manager)."""
        from botocore.exceptions import ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key_for(sha256))
        except ClientError as exc:
            if _status(exc) == 404:
                raise NotFound(f"blob sha256:{sha256[:12]} is missing from {self.location}",
                               hint="run `loradex verify` to list problems") from None
            raise _s3_failure(exc, f"reading sha256:{sha256[:12]}") from None
        return _Body(answer["Body"])

    def _download_into(self, sha256: str, sink) -> None:
        with self.open(sha256) as body:
            for chunk in iter(lambda: body.read(READ_CHUNK), b""):
                sink.write(chunk)

    def path_for(self, sha256: str) -> Path:
        """A verified local copy (the read-through cache), filled on first use. When the
        object is missing: the cache path, which is then not a file (as for the local store)."""
        self.key_for(sha256)  # a sha256 hex digest or ValueError: never a path from anything else
        hit = self.cache.lookup(sha256)
        if hit is not None:
            return hit
        try:
            return self.cache.fill(sha256, self._download_into)
        except NotFound:
            return self.cache.path_of(sha256)

    # --- writing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Blobs stored inside are published at once; their upload records (which keep gc away)
        are dropped on leaving, after the caller has committed the rows that name them."""
        stack = self._pending_stack()
        stack.append([])
        try:
            yield
        finally:
            done = stack.pop()
            for pending in done:
                self._finish(pending)

    def _pending_stack(self) -> list:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def _settle(self, pending: _Pending) -> None:
        stack = self._pending_stack()
        if stack:
            stack[-1].append(pending)
        else:
            self._finish(pending)

    def _finish(self, pending: _Pending) -> None:
        """The row is committed (or the caller gave up): check the object once more — a gc that
        stalled between its check and its delete could have removed it — then forget the upload."""
        head = self._head(pending.final_key)
        if head is None or int(head["ContentLength"]) != pending.size:
            if pending.data is not None:
                self._put_final(pending.final_key, pending.data, hashlib.sha256(pending.data).digest())
            elif pending.staging_key is not None:
                self._copy_to_final(pending.staging_key, pending.final_key, pending.size, None)
        if pending.staging_key is not None:
            self._delete_key(pending.staging_key)
        if self.ledger is not None and pending.ledger_id is not None:
            self.ledger.finish(pending.ledger_id)

    def _begin(self, staging_key: str | None) -> int | None:
        return self.ledger.begin(staging_key) if self.ledger is not None else None

    def _abandon(self, ledger_id: int | None) -> None:
        if self.ledger is not None and ledger_id is not None:
            with contextlib.suppress(Exception):
                self.ledger.finish(ledger_id)

    def add_bytes(self, data: bytes) -> StoredBlob:
        hasher = MultiHasher()
        hasher.update(data)
        hashes = hasher.result()
        final = self.key_for(hashes.sha256)
        ledger_id = self._begin(None)
        try:
            if self.ledger is not None:
                self.ledger.name(ledger_id, hashes.sha256)
            existed = self._head(final) is not None
            crashpoint("blob-temp-written")
            self._put_final(final, data, bytes.fromhex(hashes.sha256))
            crashpoint("blob-published")
        except BaseException:
            self._abandon(ledger_id)
            raise
        self._settle(_Pending(ledger_id, final, len(data), data=data))
        return StoredBlob(hashes, self.cache.path_of(hashes.sha256), linked=False, existed=existed)

    def add_file(self, src, *, link: bool = False, move: bool = False,
                 progress: Progress | None = None) -> StoredBlob:
        """Upload ``src``. ``link`` is not possible on object storage (copied, with a note);
        ``move``: the caller gives ``src`` up, so it is deleted once stored."""
        src = Path(src)
        if not src.is_file():
            raise InvalidFile(src, "not a regular file", hint="give the path of an adapter file")
        size = src.stat().st_size
        if size < self.settings.multipart_threshold:
            with open(src, "rb") as fh:
                data = fh.read(size + 1)
            if len(data) != size:
                raise InvalidFile(src, "changed while being added", hint="try again")
            if progress:
                progress(size, size, "upload")
            stored = self.add_bytes(data)
        else:
            stored = self._add_multipart(src, size, progress)
        if move:
            src.unlink(missing_ok=True)
        if link:
            import dataclasses

            stored = dataclasses.replace(stored, note=f"--link not possible on {self.location}: copied instead")
        return stored

    def _add_multipart(self, src: Path, size: int, progress: Progress | None) -> StoredBlob:
        staging = self._staging_key()
        ledger_id = self._begin(staging)
        try:
            hashes = self._upload_staged(src, staging, size, progress)
        except BaseException:
            self._abandon(ledger_id)
            raise
        final = self.key_for(hashes.sha256)
        try:
            if self.ledger is not None:
                self.ledger.name(ledger_id, hashes.sha256)
            crashpoint("blob-temp-written")
            existed = self._head(final) is not None
            self._copy_to_final(staging, final, hashes.size, hashes.sha256)
            crashpoint("blob-published")
        except BaseException:
            self._delete_key(staging)
            self._abandon(ledger_id)
            raise
        self._settle(_Pending(ledger_id, final, hashes.size, staging_key=staging))
        return StoredBlob(hashes, self.cache.path_of(hashes.sha256), linked=False, existed=existed)

    def _upload_staged(self, src: Path, key: str, size: int, progress: Progress | None):
        """Multipart upload of ``src`` to ``key``, hashing it as it is read: the parts go out
        ``PARALLEL_PARTS`` at a time while the next ones are read and hashed."""
        from botocore.exceptions import ClientError

        client, part_size = self.client, max(self.settings.part_size, MIN_PART_SIZE)
        try:
            upload = client.create_multipart_upload(Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256")
        except ClientError as exc:
            raise _s3_failure(exc, f"starting the upload of {src.name}") from None
        upload_id = upload["UploadId"]
        hasher, parts, sent = MultiHasher(), [], 0
        slots = threading.BoundedSemaphore(PARALLEL_PARTS)

        def send(number: int, chunk: bytes):
            try:
                answer = client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                            Body=chunk, ChecksumSHA256=_b64(hashlib.sha256(chunk).digest()))
                return {"PartNumber": number, "ETag": answer["ETag"],
                        "ChecksumSHA256": answer.get("ChecksumSHA256")}
            finally:
                slots.release()

        try:
            with open(src, "rb") as fh, ThreadPoolExecutor(PARALLEL_PARTS) as pool:
                futures, number = [], 0
                while True:
                    chunk = fh.read(part_size)
                    if not chunk:
                        break
                    hasher.update(chunk)
                    number += 1
                    slots.acquire()
                    futures.append(pool.submit(send, number, chunk))
                    sent += len(chunk)
                    if progress:
                        progress(sent, size, "upload")
                    crashpoint("blob-part-sent")
                parts = [f.result() for f in futures]
            hashes = hasher.result()
            if hashes.size != size:
                raise InvalidFile(src, "changed while being added", hint="try again")
            for part in parts:
                if part["ChecksumSHA256"] is None:
                    del part["ChecksumSHA256"]
            client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                             MultipartUpload={"Parts": parts})
        except BaseException as exc:
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            if isinstance(exc, ClientError):
                raise _s3_failure(exc, f"uploading {src.name}") from None
            raise
        return hashes

    def _put_final(self, key: str, data: bytes, digest: bytes) -> None:
        """PUT, then HEAD. A gc that checked the old object's age just before this PUT may delete
        the key just after it (once: one delete per listed key per run; later runs see the upload
        record): the PUT is then made again."""
        from botocore.exceptions import ClientError

        for _attempt in range(PUBLISH_ATTEMPTS):
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ChecksumSHA256=_b64(digest))
            except ClientError as exc:
                raise _s3_failure(exc, f"storing sha256:{digest.hex()[:12]}") from None
            head = self._head(key)
            if head is not None and int(head["ContentLength"]) == len(data):
                return
        raise CatalogError(f"{self.location}: sha256:{digest.hex()[:12]} was stored but the store "
                           "does not show it with its size; nothing was added", hint="try again")

    def _copy_to_final(self, staging: str, final: str, size: int, sha256: str | None) -> None:
        """Publish the staged object under its final key (one atomic server-side copy) and check
        the copy: its size, and its full SHA-256 where the store computes it. Made again if a
        racing gc deleted the key right after it (see ``_put_final``)."""
        for _attempt in range(PUBLISH_ATTEMPTS):
            self._copy_once(staging, final, size, sha256)
            head = self._head(final)
            if head is not None and int(head["ContentLength"]) == size:
                return
        raise CatalogError(f"{self.location}: the published object {final} does not have its "
                           f"{size} bytes; nothing was added", hint="try again")

    def _copy_once(self, staging: str, final: str, size: int, sha256: str | None) -> None:
        from botocore.exceptions import ClientError

        try:
            if size <= 5 * 1024 * MIB:
                answer = self.client.copy_object(Bucket=self.bucket, Key=final, ChecksumAlgorithm="SHA256",
                                                 CopySource={"Bucket": self.bucket, "Key": staging})
                checksum = answer.get("CopyObjectResult", {}).get("ChecksumSHA256")
            else:  # above CopyObject's limit: a multipart copy (also atomic on completion)
                self.client.copy({"Bucket": self.bucket, "Key": staging}, self.bucket, final)
                checksum = None
        except ClientError as exc:
            raise _s3_failure(exc, "publishing an upload") from None
        if sha256 and checksum and "-" not in checksum and base64.b64decode(checksum).hex() != sha256:
            self._delete_key(final)
            raise CatalogError(f"{self.location}: the published copy of sha256:{sha256[:12]} hashes to "
                               f"{base64.b64decode(checksum).hex()[:12]}…; nothing was added", hint="try again")

    def _delete_key(self, key: str) -> None:
        with contextlib.suppress(Exception):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    # --- maintenance --------------------------------------------------------------------
    def collecting(self):
        """No lock: gc is mark-and-sweep with a grace period, safe beside other writers."""
        return contextlib.nullcontext()

    def _list(self, prefix: str) -> Iterator[dict]:
        from botocore.exceptions import ClientError

        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])
        except ClientError as exc:
            raise _s3_failure(exc, f"listing {self.location}") from None

    def iter_entries(self) -> Iterator[BlobEntry]:
        for obj in self._list(f"{self.key_prefix}sha256/"):
            sha = self._sha_of_key(obj["Key"])
            if sha:
                yield BlobEntry(sha, int(obj["Size"]), obj["LastModified"].astimezone(timezone.utc))

    def in_flight(self) -> set[str]:
        if self.ledger is None:
            return set()
        return {rec.sha256 for rec in self.ledger.active() if rec.sha256}

    def remove(self, sha256: str, *, older_than: datetime | None = None) -> int | None:
        key = self.key_for(sha256)
        head = self._head(key)
        if head is None:
            return None
        # Last-Modified has whole seconds: compare with the cutoff's second, so an object written
        # a moment after the cutoff never looks older than it
        if older_than is not None and head["LastModified"] >= older_than.replace(microsecond=0):
            return None  # written (again) during the grace period: a writer may be about to name it
        self.client.delete_object(Bucket=self.bucket, Key=key)
        self.cache.drop(sha256)
        return int(head["ContentLength"])

    def sweep_abandoned(self, cutoff: datetime, *, dry_run: bool = False) -> tuple[int, int]:
        """Staged objects and multipart uploads older than ``cutoff`` that no upload in progress
        names (their writer was killed), and upload records older than the stale age
        (``LORADEX_BLOB_UPLOAD_STALE_SECONDS``, 24 h: a record cannot tell a killed writer from a
        slow one, so only age retires it — never the grace period, which may be 0)."""
        live = {rec.staging_key for rec in self.ledger.active()} if self.ledger is not None else set()
        count = freed = 0
        for obj in self._list(f"{self.key_prefix}uploads/"):
            if obj["Key"] in live or obj["LastModified"] >= cutoff:
                continue
            if not dry_run:
                self._delete_key(obj["Key"])
            count, freed = count + 1, freed + int(obj["Size"])
        for upload in self._multipart_uploads():
            if upload["Key"] in live or upload["Initiated"] >= cutoff:
                continue
            if not dry_run:
                with contextlib.suppress(Exception):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])
            count += 1
        if not dry_run and self.ledger is not None:
            from datetime import timedelta

            self.ledger.drop_older_than(datetime.now(timezone.utc) - timedelta(seconds=self.settings.stale_upload_seconds))
        return count, freed

    def _multipart_uploads(self) -> Iterator[dict]:
        kwargs = {"Bucket": self.bucket, "Prefix": f"{self.key_prefix}uploads/"}
        while True:
            page = self.client.list_multipart_uploads(**kwargs)
            yield from page.get("Uploads", [])
            if not page.get("IsTruncated"):
                return
            kwargs.update(KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"])

    def verify_blob(self, sha256: str) -> str | None:
        """Stream the object through SHA-256 (the store's own checksum is not trusted alone)."""
        digest = hashlib.sha256()
        try:
            with self.open(sha256) as body:
                for chunk in iter(lambda: body.read(READ_CHUNK), b""):
                    digest.update(chunk)
        except NotFound:
            return "missing"
        if digest.hexdigest() != sha256:
            self.cache.drop(sha256)
            return f"content hash is {digest.hexdigest()[:12]}… (corrupted)"
        return None

    def shared_with(self, sha256: str) -> list[str]:
        return []  # nothing is hardlinked into object storage

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (``blobs migrate``, tests)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _status(exc) not in (404, 400):
                raise _s3_failure(exc, f"checking the bucket {self.bucket}") from None
            self.client.create_bucket(Bucket=self.bucket)


class _Body:
    """A botocore streaming body as a plain readable binary file."""

    def __init__(self, body):
        self._body = body

    def read(self, n: int = -1) -> bytes:
        return self._body.read(None if n is None or n < 0 else n)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._body.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _make_client(settings: S3Settings):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise CatalogError("LORADEX_BLOBS names an s3:// location but boto3 is not installed",
                           hint="pip install 'boto3>=1.34'") from None
    config = Config(s3={"addressing_style": settings.addressing_style} if settings.addressing_style else {},
                    retries={"max_attempts": 5, "mode": "standard"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    max_pool_connections=PARALLEL_PARTS * 2 + 2)
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=settings.endpoint_url,
                          region_name=settings.region or session.region_name or "us-east-1", config=config)


def _status(exc) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _s3_failure(exc, doing: str) -> CatalogError:
    """One line, no credentials: the store's error code and message."""
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "?"))[:60], " ".join(str(error.get("Message", "")).split())[:200]
    hint = "check the bucket, the endpoint and the credentials (the usual AWS settings)"
    return CatalogError(f"object storage refused {doing}: {code} {message}".rstrip(), hint=hint)
