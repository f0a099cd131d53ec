"""Request bodies with a size limit: refused from the declared length when it says too
much, cut off while streaming when the body runs past the limit, and multipart forms read
through it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser

from queues.errors import InvalidRequest, UploadTooLarge

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class UploadLimit:
    limit_bytes: int
    setting: str  # the setting that raises it, named in the error
    advice: str  # what to do instead

    def too_large(self, size_bytes: int) -> UploadTooLarge:
        return UploadTooLarge(
            f"the upload is {size_bytes / MB:.1f} MB, more than the limit of "
            f"{self.limit_bytes / MB:.1f} MB ({self.setting}); {self.advice}"
        )

    def check_declared(self, request: Request) -> None:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit_bytes:
            raise self.too_large(int(declared))

    async def stream(self, request: Request) -> AsyncGenerator[bytes, None]:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > self.limit_bytes:
                raise self.too_large(received)
            yield chunk

    async def read_form(self, request: Request, *, max_files: int) -> FormData:
        """The multipart form of ``request``, within the limit."""
        self.check_declared(request)
        parser = MultiPartParser(
            request.headers, self.stream(request), max_files=max_files, max_fields=16
        )
        try:
            return await parser.parse()
        except MultiPartException as exc:
            raise InvalidRequest(f"the multipart body cannot be read: {exc.message}") from exc
