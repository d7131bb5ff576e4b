"""Audio in S3-compatible object storage (AWS S3, Ceph, MinIO, SeaweedFS).

Objects are immutable and content-addressed by cache key, so they carry long-lived cache headers
and can sit behind a CDN (``TTSD_PUBLIC_BASE_URL``); without one, clients get presigned URLs.
"""

from __future__ import annotations

import io
import time
from collections import OrderedDict
from typing import Any

from ..config import Settings
from ..errors import AudioNotFound, StorageError
from .base import AudioStore, Location, Redirect, Span

_MULTIPART_THRESHOLD = 5 * 1024 * 1024
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
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
        self._client_error = ClientError
        self.bucket = settings.s3_bucket
        self._public_base = settings.public_base_url.rstrip("/") if settings.public_base_url else None
        self._presign_ttl = settings.s3_presign_ttl
        # A URL is handed out for the first half of its life, so a client always gets at least
        # half the TTL to use it.
        self._presign_reuse = settings.s3_presign_ttl / 2
        self._presigned: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._presigned_max = settings.hot_entries
        self._cache_control = f"public, max-age={settings.cache_ttl}, immutable"
        self._transfer = TransferConfig(
            multipart_threshold=_MULTIPART_THRESHOLD, multipart_chunksize=_MULTIPART_THRESHOLD
        )
        secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        self._s3: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=secret,
            region_name=settings.s3_region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=2,
                read_timeout=10,
                signature_version="s3v4",
                # Checksums only where an operation requires them (botocore's default before 1.36):
                # S3-compatible stores (older MinIO, Ceph, R2 at first) refuse or mishandle the
                # newer default. TLS (over plain HTTP, the signed SHA-256 of the payload) guards uploads.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        # No network here: a worker or API that starts while storage is away must come up anyway.
        self._create_bucket = settings.s3_create_bucket

    def _fail(self, action: str, exc: Exception) -> StorageError:
        return StorageError(f"object storage failed to {action}: {exc}", retry_after=2)

    def _missing(self, exc: Exception) -> bool:
        if not isinstance(exc, self._client_error):
            return False
        error: dict[str, Any] = exc.response.get("Error", {})
        return str(error.get("Code")) in _MISSING

    def check(self) -> None:
        """Raise StorageError unless the bucket answers; create it first when configured to."""
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except self._errors as exc:
            if not (self._create_bucket and self._missing(exc)):
                raise self._fail("reach the bucket", exc) from exc
            try:
                self._s3.create_bucket(Bucket=self.bucket)
            except self._errors as create_exc:
                raise self._fail("create the bucket", create_exc) from create_exc
        self._create_bucket = False  # it exists now

    def put(self, name: str, data: bytes, content_type: str) -> None:
        if self._create_bucket:
            self.check()
        stored_type = _STORED_TYPES.get(content_type, content_type)
        extra = {"ContentType": stored_type, "CacheControl": self._cache_control}
        try:
            if len(data) > _MULTIPART_THRESHOLD:
                self._s3.upload_fileobj(
                    io.BytesIO(data), self.bucket, name, ExtraArgs=extra, Config=self._transfer
                )
            else:
                self._s3.put_object(Bucket=self.bucket, Key=name, Body=data, **extra)
        except self._errors as exc:
            raise self._fail("store audio", exc) from exc

    def get(self, name: str, span: Span | None = None) -> bytes:
        if span is not None and span[1] == 0:
            return b""  # a sentence that is silence by itself; HTTP has no empty Range
        ranged = {} if span is None else {"Range": f"bytes={span[0]}-{span[0] + span[1] - 1}"}
        try:
            body: bytes = self._s3.get_object(Bucket=self.bucket, Key=name, **ranged)["Body"].read()
        except self._errors as exc:
            if self._missing(exc):
                raise AudioNotFound(f"no audio named {name!r}") from exc
            raise self._fail("read audio", exc) from exc
        return body

    def exists(self, name: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=name)
        except self._errors as exc:
            if self._missing(exc):
                return False
            raise self._fail("look up audio", exc) from exc
        return True

    def delete(self, name: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=name)
        except self._errors as exc:
            raise self._fail("delete audio", exc) from exc

    def locate(self, name: str) -> Location:
        if self._public_base:
            return Redirect(f"{self._public_base}/{name}")
        now = time.monotonic()
        known = self._presigned.get(name)
        if known is not None and now - known[0] < self._presign_reuse:
            return Redirect(known[1])
        url: str = self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=self._presign_ttl
        )
        self._presigned[name] = (now, url)
        self._presigned.move_to_end(name)
        while len(self._presigned) > self._presigned_max:
            self._presigned.popitem(last=False)
        return Redirect(url)
