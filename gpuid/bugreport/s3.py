"""Bug reports to S3: a multipart upload fed straight from the exec stream.

Key ``<S3_PREFIX>/bug-reports/<cluster>/<node>/<file name>`` in the S3
exporter's bucket, with the SHA-256 and size the pod computed in the object
metadata. Memory stays at one 5 MiB part (S3's minimum) however big the
report is. An upload that fails or is abandoned is aborted, so no
half-uploaded parts linger (they would cost storage until a lifecycle rule
removed them). Each S3 call is bounded by ``S3_TIMEOUT`` (``s3_call``), so a
silent endpoint fails the collection instead of hanging it. aioboto3 is
imported only when S3 is actually used (``gpuid.exporters.s3client``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from gpuid import __version__
from gpuid.bugreport.sinks import ReportWriter
from gpuid.exporters.s3client import S3Settings, open_client, s3_call, s3_error

PART_BYTES = 5 * 1024 * 1024  # S3's minimum part size (all parts but the last)


class S3Destination:
    name = "s3"

    def __init__(self, settings: S3Settings, cluster: str) -> None:
        self.settings = settings
        self.cluster = cluster

    def key(self, node: str, file_name: str) -> str:
        parts = (self.settings.prefix, "bug-reports", self.cluster, node, file_name)
        return "/".join(p for p in parts if p)

    async def open(self, node: str, file_name: str, *, size: int, sha256: str) -> ReportWriter:
        cfg = self.settings
        stack = contextlib.AsyncExitStack()
        key = self.key(node, file_name)
        args: dict[str, Any] = {
            "Bucket": cfg.bucket,
            "Key": key,
            "ContentType": "application/gzip",
            "Metadata": {"sha256": sha256, "size": str(size), "node": node, "gpuid-version": __version__},
            **cfg.encryption(),
        }
        try:
            s3 = await open_client(cfg, stack, attempts=3)
            upload = await s3_call(cfg, s3.create_multipart_upload(**args))
        except Exception as e:
            await stack.aclose()
            raise s3_error(e, cfg.bucket) from None
        return _S3Writer(s3, stack, cfg, key, upload["UploadId"])


class _S3Writer:
    def __init__(
        self, s3: Any, stack: contextlib.AsyncExitStack, settings: S3Settings, key: str, upload: str
    ) -> None:
        self._s3 = s3
        self._stack = stack
        self._settings = settings
        bucket = settings.bucket
        self._target = {"Bucket": bucket, "Key": key, "UploadId": upload}
        self._parts: list[dict[str, Any]] = []
        self._buffer = bytearray()
        self._done = False
        self.location = f"s3://{bucket}/{key}"

    async def write(self, chunk: memoryview) -> None:
        self._buffer += chunk
        if len(self._buffer) >= PART_BYTES:
            await self._upload_part()

    async def _upload_part(self) -> None:
        body, self._buffer = bytes(self._buffer), bytearray()
        number = len(self._parts) + 1
        upload = self._s3.upload_part(Body=body, PartNumber=number, **self._target)
        answer = await s3_call(self._settings, upload)
        self._parts.append({"ETag": answer["ETag"], "PartNumber": number})

    async def commit(self) -> None:
        if self._buffer or not self._parts:
            await self._upload_part()  # the last part may be smaller than PART_BYTES
        complete = self._s3.complete_multipart_upload(MultipartUpload={"Parts": self._parts}, **self._target)
        await s3_call(self._settings, complete)
        self._done = True
        await self._stack.aclose()

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        try:
            await s3_call(self._settings, self._s3.abort_multipart_upload(**self._target))
        finally:
            await self._stack.aclose()
