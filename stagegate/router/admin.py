"""The admin API: read and set the split, roll back. The contract (an ``http`` TrafficController adapter
is written against it; docs/router.md):

- every call needs ``Authorization: Bearer <token>``, compared with ``hmac.compare_digest``; a missing or
  wrong token is 401;
- ``GET /admin/split`` -> 200 ``{"champion", "candidate", "candidate_weight", "shadow"}``;
- ``PUT /admin/split`` with that body -> 200 with the split now in force, validated as
  :class:`stagegate.ports.Split` and persisted before the answer; 422 on a malformed body, 413 on a body
  over the limit, 409 when a version it names cannot be loaded, 503 when it cannot be persisted;
- ``POST /admin/rollback`` with ``{"champion": str|null}`` -> 200 with the split now in force: all
  champion (``champion`` if given, else the current one), shadow off.

A refused request changes nothing: the body is checked, the versions loaded and the split persisted
before the split in force is swapped.
"""

from __future__ import annotations

import hmac
from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse

from stagegate.ports import Split
from stagegate.router.config import RouterConfig
from stagegate.router.schemas import RollbackRequest
from stagegate.router.web import HTTPProblem, parse, read_body


class SplitOwner(Protocol):
    """What the admin API needs of the router (stagegate.router.app.Router)."""

    token: str
    config: RouterConfig
    split: Split

    async def apply(self, split: Split) -> None: ...

    async def rollback(self, champion: str | None) -> None: ...


_BEARER = "bearer "


def authorize(request: Request, token: str) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>`` (compared in constant time)."""
    header = request.headers.get("authorization", "")
    given = header[len(_BEARER) :] if header[: len(_BEARER)].lower() == _BEARER else ""
    # compare_digest on bytes of any length: the time does not depend on where the strings differ
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPProblem(401, "missing or wrong admin token")


def _answer(split: Split) -> JSONResponse:
    return JSONResponse(split.model_dump())


async def get_split(request: Request) -> JSONResponse:
    router: SplitOwner = request.app.state.router
    try:
        authorize(request, router.token)
    except HTTPProblem as problem:
        return problem.response()
    return _answer(router.split)


async def put_split(request: Request) -> JSONResponse:
    router: SplitOwner = request.app.state.router
    try:
        authorize(request, router.token)
        body = await read_body(request, router.config.max_body_bytes)
        split = parse(body, Split)
        await router.apply(split)
    except HTTPProblem as problem:
        return problem.response()
    return _answer(router.split)


async def rollback(request: Request) -> JSONResponse:
    router: SplitOwner = request.app.state.router
    try:
        authorize(request, router.token)
        body = await read_body(request, router.config.max_body_bytes)
        asked = parse(body, RollbackRequest)
        await router.rollback(asked.champion)
    except HTTPProblem as problem:
        return problem.response()
    return _answer(router.split)
