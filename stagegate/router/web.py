"""Small HTTP helpers shared by the serving path and the admin API: a body read under a size limit, JSON
parsed into a pydantic model, and JSON error answers."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

M = TypeVar("M", bound=BaseModel)


class HTTPProblem(Exception):
    """An answer other than 200: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return JSONResponse(body, status_code=self.status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it exceeds ``limit`` bytes (declared or streamed): an oversized
    body is never read whole into memory."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPProblem(400, "content-length is not a number") from None
        if size > limit:
            raise HTTPProblem(413, f"body of {size} bytes exceeds the limit of {limit} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise HTTPProblem(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse(body: bytes, model: type[M], *, forbid_extra: bool = True) -> M:
    """``body`` as JSON validated by ``model``; 422 naming the fields otherwise. ``forbid_extra`` refuses
    keys the model does not declare even when the model itself would ignore them."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPProblem(422, f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPProblem(422, f"body must be a JSON object, got {type(data).__name__}")
    if forbid_extra:
        unknown = sorted(set(data) - set(model.model_fields))
        if unknown:
            raise HTTPProblem(422, f"unknown field(s) {unknown}; expected {sorted(model.model_fields)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [{"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        raise HTTPProblem(422, "body does not validate", problems) from None
