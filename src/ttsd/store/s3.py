"""Audio in S3-compatible object storage (AWS S3, Ceph, MinIO, SeaweedFS).

Objects are immutable and content-addressed by cache key, so they carry long-lived cache headers
and can sit behind a CDN (``TTSD_PUBLIC_BASE_URL``); without one, clients get presigned URLs.

Objects go through obstore (Rust's object_store): a PUT, a ranged GET or a signature costs the
calling process 0.3 to 1.4 ms of CPU against 2 to 4 ms through boto3, and it holds the GIL for
none of it, where boto3's request building and signing was the worker's largest part outside
synthesis. boto3 stays for what obstore has no call for: the bucket itself, and the credentials
boto3 finds when none are configured.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ..config import Settings
from ..errors import AudioNotFound, StorageError
from .base import AudioStore, Location, Redirect, Span
from .credentials import Boto3Chain

# Presigned URLs are remembered per object, as many as the hits the API remembers
# (TTSD_HOT_ENTRIES): a hot object is handed out under one URL that browsers and CDNs can cache,
# and signing (botocore, about 1 ms: the costliest part of a hit, half the event loop's time in a
# profile of hits over 20,000 texts with room for 10,000) happens once a window.
_MISSING = {"404", "NoSuchKey", "NotFound"}
# SeaweedFS gzips every object typed exactly audio/wav (its IsCompressableFileType), though speech
# barely compresses (0.87): about half its CPU for a text's file, and it unzips the whole file for
# each sentence read out of it. The codecs parameter names the same thing (1 is PCM, as browsers'
# canPlayType reads it) and SeaweedFS stores such objects as sent, as AWS S3 and MinIO store any.
_STORED_TYPES = {"audio/wav": 'audio/wav; codecs="1"'}


class S3Store(AudioStore):
    direct_urls = True

    def __init__(self, settings: Settings) -> None:
        import boto3
        import obstore
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
        from obstore.exceptions import BaseError, NotFoundError
        from obstore.store import S3Store as ObjectStore

        self._ob = obstore
        self._errors: tuple[type[Exception], ...] = (BaseError, OSError)
        # obstore raises Python's own FileNotFoundError for a missing object (its NotFoundError
        # for some stores): either is a miss, never a storage fault.
        self._not_found: tuple[type[Exception], ...] = (NotFoundError, FileNotFoundError)
        self._bucket_errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
        self._client_error = ClientError
        self.bucket = settings.s3_bucket
        self._public_base = settings.public_base_url.rstrip("/") if settings.public_base_url else None
        self._presign_ttl = timedelta(seconds=settings.s3_presign_ttl)
        # A URL is handed out for the first half of its life, so a client always gets at least
        # half the TTL to use it.
        self._presign_reuse = settings.s3_presign_ttl / 2
        self._presigned: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._presigned_max = settings.hot_entries
        self._cache_control = f"public, max-age={settings.cache_ttl}, immutable"
        secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        session = boto3.Session(
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=secret,
            region_name=settings.s3_region,
        )
        endpoint = settings.s3_endpoint_url
        # Path-style addressing: S3-compatible stores (MinIO, Ceph, SeaweedFS) serve buckets that way.
        located: dict[str, Any] = {"region": settings.s3_region, "virtual_hosted_style_request": False}
        if endpoint:
            located["endpoint"] = endpoint
        if settings.s3_access_key and secret:
            located |= {"access_key_id": settings.s3_access_key, "secret_access_key": secret}
        else:
            located["credential_provider"] = Boto3Chain(session)
        self._objects = ObjectStore(
            settings.s3_bucket,
            **located,
            client_options={
                "allow_http": bool(endpoint and endpoint.startswith("http://")),
                "connect_timeout": timedelta(seconds=2),
                "timeout": timedelta(seconds=10),
            },
            # One retry after a short pause, as the boto3 client had: a job that finds storage
            # away fails within seconds and is retried as a whole, with what it made kept.
            retry_config={
                "max_retries": 1,
                "retry_timeout": timedelta(seconds=10),
                "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1)},
            },
        )
        # Made when first used: botocore walks the credential chain as it makes a client, and that
        # ends at the instance-metadata service. No network here: a worker or API that starts while
        # storage (or that service) is away must come up anyway.
        self._bucket_client: Callable[[], Any] = lambda: session.client(
            "s3",
            endpoint_url=endpoint,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}, connect_timeout=2),
        )
        self._s3: Any = None
        self._create_bucket = settings.s3_create_bucket

    def _fail(self, action: str, exc: Exception) -> StorageError:
        return StorageError(f"object storage failed to {action}: {exc}", retry_after=2)

    def _missing_bucket(self, exc: Exception) -> bool:
        if not isinstance(exc, self._client_error):
            return False
        error: dict[str, Any] = exc.response.get("Error", {})
        return str(error.get("Code")) in _MISSING

    def check(self) -> None:
        """Raise StorageError unless the bucket answers; create it first when configured to."""
        try:
            if self._s3 is None:
                self._s3 = self._bucket_client()
            self._s3.head_bucket(Bucket=self.bucket)
        except self._bucket_errors as exc:
            if not (self._create_bucket and self._missing_bucket(exc)):
                raise self._fail("reach the bucket", exc) from exc
            try:
                self._s3.create_bucket(Bucket=self.bucket)
            except self._bucket_errors as create_exc:
                raise self._fail("create the bucket", create_exc) from create_exc
        self._create_bucket = False  # it exists now

    def put(self, name: str, data: bytes, content_type: str) -> None:
        if self._create_bucket:
            self.check()
        attributes = {
            "Content-Type": _STORED_TYPES.get(content_type, content_type),
            "Cache-Control": self._cache_control,
        }
        try:
            self._ob.put(self._objects, name, data, attributes=attributes)
        except self._errors as exc:
            raise self._fail("store audio", exc) from exc

    def get(self, name: str, span: Span | None = None) -> bytes:
        if span is not None and span[1] == 0:
            return b""  # a sentence that is silence by itself; HTTP has no empty Range
        try:
            if span is None:
                return bytes(self._ob.get(self._objects, name).bytes())
            return bytes(self._ob.get_range(self._objects, name, start=span[0], length=span[1]))
        except self._not_found as exc:
            raise AudioNotFound(f"no audio named {name!r}") from exc
        except self._errors as exc:
            raise self._fail("read audio", exc) from exc

    def exists(self, name: str) -> bool:
        try:
            self._ob.head(self._objects, name)
        except self._not_found:
            return False
        except self._errors as exc:
            raise self._fail("look up audio", exc) from exc
        return True

    def delete(self, name: str) -> None:
        try:
            self._ob.delete(self._objects, name)
        except self._errors as exc:
            raise self._fail("delete audio", exc) from exc

    def locate(self, name: str) -> Location:
        if self._public_base:
            return Redirect(f"{self._public_base}/{name}")
        now = time.monotonic()
        known = self._presigned.get(name)
        if known is not None and now - known[0] < self._presign_reuse:
            return Redirect(known[1])
        try:
            url = self._ob.sign(self._objects, "GET", name, self._presign_ttl)
        except self._errors as exc:
            raise self._fail("sign a link to audio", exc) from exc
        self._presigned[name] = (now, url)
        self._presigned.move_to_end(name)
        while len(self._presigned) > self._presigned_max:
            self._presigned.popitem(last=False)
        return Redirect(url)
