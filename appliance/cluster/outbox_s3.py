"""The wire protocols of results out (`outbox.py`): an S3 bucket, through aiobotocore (which signs
the requests), and an HTTP endpoint that takes a PUT of each file.

Each maps what went wrong to LinkDown (no answer: try later) or PushRefused (an answer that says no:
a sentence for a person), and a lost multipart upload to UploadGone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import exceptions as boto

from appliance.cluster.outbox import (
    FINGERPRINT_META,
    Destination,
    LinkDown,
    PushRefused,
    Stored,
    Transport,
    UploadGone,
)

CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 60.0
BUSY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
              "ServiceUnavailable", "InternalError", "503", "500", "502", "504"}


def open_transport(destination: Destination, key_id: str = "", secret: str = "",
                   connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
                   read_timeout: float = READ_TIMEOUT_SECONDS) -> Transport:
    """The transport for a destination; for S3, empty credentials mean botocore's default chain
    (environment, ~/.aws, instance role). For HTTP, a key id makes it HTTP Basic authentication."""
    if destination.kind == "s3":
        return S3Transport(destination, key_id, secret, connect_timeout, read_timeout)
    return HttpPutTransport(destination, key_id, secret, connect_timeout, read_timeout)


def _md5_header(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class _NotThere(Exception):
    """HEAD found no object."""


class S3Transport:
    """An S3 bucket, or an S3-compatible store at `endpoint` (MinIO, Ceph, Garage...)."""

    multipart = True

    def __init__(self, destination: Destination, key_id: str = "", secret: str = "",
                 connect_timeout: float = CONNECT_TIMEOUT_SECONDS, read_timeout: float = READ_TIMEOUT_SECONDS) -> None:
        if destination.kind != "s3":
            raise ValueError(f"{destination} is not an s3:// destination")
        self.destination = destination
        self._credentials = {"aws_access_key_id": key_id, "aws_secret_access_key": secret} if key_id else {}
        self._config = AioConfig(
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": 2},  # the outbox's own backoff does the rest
            # path-style keys work on every S3-compatible store; checksums only where the API needs them
            # (stores other than Amazon's often refuse the newer default ones); parts carry Content-MD5
            s3={"addressing_style": "path"} if destination.endpoint else None,
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._opening = asyncio.Lock()

    async def _s3(self) -> Any:
        async with self._opening:
            if self._client is None:
                stack = AsyncExitStack()
                self._client = await stack.enter_async_context(get_session().create_client(
                    "s3", region_name=self.destination.region, endpoint_url=self.destination.endpoint or None,
                    config=self._config, **self._credentials))
                self._stack = stack
            return self._client

    @contextlib.contextmanager
    def _answers(self, what: str) -> Iterator[None]:
        """Turn botocore's errors into LinkDown, PushRefused or UploadGone, each one sentence."""
        where = self.destination.endpoint or "Amazon S3"
        bucket = self.destination.bucket
        try:
            yield
        except boto.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            message = str(error.get("Message", "")).rstrip(".")
            if code in ("404", "NoSuchKey", "NotFound") and what == "a look at what is there":
                raise _NotThere() from None  # a HEAD has no body: a missing object is a bare 404
            if code == "NoSuchUpload":
                raise UploadGone(f"the bucket no longer has the upload ({what})") from None
            if status >= 500 or code in BUSY_CODES:
                raise LinkDown(f"{where} answered {status} {code or ''} to {what}".rstrip()) from None
            if code in ("NoSuchBucket",):
                raise PushRefused(f"the bucket {bucket} does not exist at {where}") from None
            if code in ("InvalidAccessKeyId",):
                raise PushRefused(f"{where} does not know the key id (results_out_key_id)") from None
            if code in ("SignatureDoesNotMatch",):
                raise PushRefused(f"{where} refused the secret (results_out_secret) for this key id") from None
            if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
                raise PushRefused(f"{where} denied access to the bucket {bucket} ({what}); the key needs "
                                  "s3:PutObject, s3:GetObject and s3:ListMultipartUploadParts there") from None
            said = f": {message}" if message else ""
            raise PushRefused(f"the bucket {bucket} at {where} answered {code or status} to {what}{said}") from None
        except (boto.NoCredentialsError, boto.PartialCredentialsError):
            raise PushRefused("there are no credentials for the bucket: set results_out_key_id and "
                              "results_out_secret") from None
        except boto.SSLError as exc:
            raise PushRefused(f"the TLS certificate of {where} is not trusted ({exc})") from None
        except boto.ConnectTimeoutError:
            raise LinkDown(f"{where} did not answer a connection within {self._config.connect_timeout:.0f} s") from None
        except boto.ReadTimeoutError:
            raise LinkDown(f"{where} stopped answering during {what}") from None
        except boto.EndpointConnectionError:
            raise LinkDown(f"could not connect to {where}") from None
        except (boto.HTTPClientError, boto.ConnectionError, boto.IncompleteReadError, aiohttp.ClientError,
                TimeoutError, ConnectionError):
            raise LinkDown(f"the connection to {where} broke off during {what}") from None

    async def stat(self, location: str) -> Stored | None:
        s3 = await self._s3()
        try:
            with self._answers("a look at what is there"):
                reply = await s3.head_object(Bucket=self.destination.bucket, Key=location)
        except _NotThere:
            return None
        return Stored(int(reply["ContentLength"]), reply.get("Metadata", {}).get(FINGERPRINT_META, ""))

    async def put(self, location: str, body: bytes | AsyncIterator[bytes], size: int, fingerprint: str) -> None:
        data = body if isinstance(body, bytes) else b"".join([chunk async for chunk in body])
        s3 = await self._s3()
        with self._answers(f"the upload of {location.rpartition('/')[2]}"):
            await s3.put_object(Bucket=self.destination.bucket, Key=location, Body=data, ContentMD5=_md5_header(data),
                                Metadata={FINGERPRINT_META: fingerprint})

    async def start_upload(self, location: str, fingerprint: str) -> str:
        s3 = await self._s3()
        with self._answers(f"the start of the upload of {location.rpartition('/')[2]}"):
            reply = await s3.create_multipart_upload(Bucket=self.destination.bucket, Key=location,
                                                     Metadata={FINGERPRINT_META: fingerprint})
        return str(reply["UploadId"])

    async def list_parts(self, location: str, upload_id: str) -> dict[int, tuple[str, int]]:
        s3 = await self._s3()
        parts: dict[int, tuple[str, int]] = {}
        marker = 0
        with self._answers(f"the list of parts of {location.rpartition('/')[2]}"):
            while True:
                reply = await s3.list_parts(Bucket=self.destination.bucket, Key=location, UploadId=upload_id,
                                            PartNumberMarker=marker)
                for part in reply.get("Parts", []):
                    parts[int(part["PartNumber"])] = (str(part["ETag"]), int(part["Size"]))
                if not reply.get("IsTruncated"):
                    return parts
                marker = int(reply["NextPartNumberMarker"])

    async def put_part(self, location: str, upload_id: str, number: int, data: bytes) -> str:
        s3 = await self._s3()
        with self._answers(f"part {number} of {location.rpartition('/')[2]}"):
            reply = await s3.upload_part(Bucket=self.destination.bucket, Key=location, UploadId=upload_id,
                                         PartNumber=number, Body=data, ContentMD5=_md5_header(data))
        return str(reply["ETag"])

    async def complete(self, location: str, upload_id: str, parts: dict[int, str]) -> None:
        s3 = await self._s3()
        with self._answers(f"the end of the upload of {location.rpartition('/')[2]}"):
            await s3.complete_multipart_upload(
                Bucket=self.destination.bucket, Key=location, UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in sorted(parts.items())]})

    async def abort(self, location: str, upload_id: str) -> None:
        s3 = await self._s3()
        with contextlib.suppress(UploadGone), self._answers(f"dropping an old upload of {location.rpartition('/')[2]}"):
            await s3.abort_multipart_upload(Bucket=self.destination.bucket, Key=location, UploadId=upload_id)

    async def aclose(self) -> None:
        async with self._opening:
            if self._stack is not None:
                await self._stack.aclose()
            self._stack, self._client = None, None


class HttpPutTransport:
    """An HTTP endpoint that takes `PUT <url>/<task uuid>/<file name>` and answers HEAD on it. Each
    file goes in one PUT: one broken off is sent again from its start."""

    multipart = False

    def __init__(self, destination: Destination, key_id: str = "", secret: str = "",
                 connect_timeout: float = CONNECT_TIMEOUT_SECONDS, read_timeout: float = READ_TIMEOUT_SECONDS) -> None:
        if destination.kind != "http":
            raise ValueError(f"{destination} is not an http(s):// destination")
        self.destination = destination
        basic = base64.b64encode(f"{key_id}:{secret}".encode()).decode()  # HTTP Basic (RFC 7617)
        self._headers = {"Authorization": f"Basic {basic}"} if key_id else {}
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    def _judge(self, status: int, what: str) -> None:
        if status >= 500 or status in (408, 429):
            raise LinkDown(f"{self.destination.url} answered HTTP {status} to {what}")
        if status in (401, 403):
            raise PushRefused(f"{self.destination.url} refused {what} (HTTP {status}); check results_out_key_id "
                              "and results_out_secret")
        if status >= 400:
            raise PushRefused(f"{self.destination.url} answered HTTP {status} to {what}")

    @contextlib.contextmanager
    def _answers(self, what: str) -> Iterator[None]:
        try:
            yield
        except aiohttp.ClientSSLError as exc:
            raise PushRefused(f"the TLS certificate of {self.destination.url} is not trusted ({exc})") from None
        except aiohttp.ClientConnectorError:
            raise LinkDown(f"could not connect to {self.destination.url}") from None
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            raise LinkDown(f"the connection to {self.destination.url} broke off during {what}") from None

    async def stat(self, location: str) -> Stored | None:
        with self._answers("a look at what is there"):
            async with self._http().head(location, allow_redirects=True) as reply:
                if reply.status in (404, 405, 410, 501):  # not there, or the endpoint cannot say
                    return None
                self._judge(reply.status, "a look at what is there")
                length = reply.headers.get("Content-Length", "")
                return Stored(int(length)) if length.isdigit() else None

    async def put(self, location: str, body: bytes | AsyncIterator[bytes], size: int, fingerprint: str) -> None:
        what = f"the upload of {location.rpartition('/')[2]}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}  # not chunked
        with self._answers(what):
            async with self._http().put(location, data=body, headers=headers) as reply:
                self._judge(reply.status, what)
                await reply.read()

    async def start_upload(self, location: str, fingerprint: str) -> str:
        raise NotImplementedError("an HTTP PUT destination has no multipart uploads")

    async def list_parts(self, location: str, upload_id: str) -> dict[int, tuple[str, int]]:
        raise NotImplementedError("an HTTP PUT destination has no multipart uploads")

    async def put_part(self, location: str, upload_id: str, number: int, data: bytes) -> str:
        raise NotImplementedError("an HTTP PUT destination has no multipart uploads")

    async def complete(self, location: str, upload_id: str, parts: dict[int, str]) -> None:
        raise NotImplementedError("an HTTP PUT destination has no multipart uploads")

    async def abort(self, location: str, upload_id: str) -> None:
        return None  # nothing is left half-way at an HTTP destination

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None
