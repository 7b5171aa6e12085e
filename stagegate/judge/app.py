"""The judge's HTTP API (FastAPI, served by uvicorn): Argo Rollouts' web provider and Flagger's webhooks.

Routes (docs/adapters/argo-flagger.md has the tools' side):

- ``GET /argo/v1/{namespace}/{rollout}``: one measurement of an AnalysisRun's ``web`` metric. Query
  arguments (from the AnalysisTemplate's ``{{args.*}}``): ``revision``, ``promotion``, ``step``,
  ``weight``, ``start``, ``end``, ``deadline`` (see :class:`stagegate.judge.looks.LookRequest`). Answers
  the JSON of :mod:`stagegate.judge.looks`; 200 for PASS / FAIL / INCONCLUSIVE, 503 for ERROR.
- ``POST /flagger/confirm-traffic-increase``, ``/flagger/confirm-promotion``, ``/flagger/rollback``: Flagger's
  webhook payload (``name``, ``namespace``, ``phase``, ``checksum``, ``metadata``: string to string; our
  keys ``promotion``, ``step``, ``weight``, ``start``, ``end``, ``deadline``). The status is the answer
  (:func:`stagegate.judge.verdicts.status_for`); the body is the same JSON as Argo's. One exception:
  Flagger asks confirm-traffic-increase before the canary's first step, when there is nothing to
  measure; that first increase is let through once per revision (:meth:`Judge.open_first_step`).
- ``GET /healthz``: the stage and gates being applied.

Bad input (an unknown metadata key, a naive timestamp, an empty window) is 400 and never judged; an
unexpected failure is 500 with ``"verdict": "ERROR"``: neither is ever a 2xx.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stagegate.judge.looks import BadLookRequest, Judge, LookRequest
from stagegate.judge.verdicts import Hook, status_for

ARGO_ROUTE = "/argo/v1/{namespace}/{rollout}"
FLAGGER_ROUTES = {
    Hook.CONFIRM_TRAFFIC_INCREASE: "/flagger/confirm-traffic-increase",
    Hook.CONFIRM_PROMOTION: "/flagger/confirm-promotion",
    Hook.ROLLBACK: "/flagger/rollback",
}
#: The Flagger webhook ``metadata`` keys the judge reads; any other key is refused (a typo must not
#: silently widen the window).
METADATA_KEYS = ("promotion", "step", "weight", "start", "end", "revision", "deadline")


class FlaggerPayload(BaseModel):
    """The body Flagger POSTs to every webhook (fluxcd/flagger pkg/apis/flagger/v1beta1
    CanaryWebhookPayload; docs/gitbook/usage/webhooks.md "Webhook payload")."""

    model_config = ConfigDict(extra="ignore")  # Flagger may add fields; the ones we read are checked

    name: str = Field(min_length=1)
    namespace: str = Field(min_length=1)
    phase: str = ""
    checksum: str = ""
    metadata: dict[str, str] = Field(default_factory=dict)


def _parse_time(value: str, field: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadLookRequest(f"{field}: not an ISO 8601 timestamp: {value!r}") from exc
    if when.tzinfo is None:
        raise BadLookRequest(f"{field}: timestamp {value!r} has no time zone (give UTC, e.g. ...Z)")
    return when


def _parse_int(value: str, field: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise BadLookRequest(f"{field}: not an integer: {value!r}") from exc


def _parse_float(value: str, field: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise BadLookRequest(f"{field}: not a number: {value!r}") from exc


def _parse_bool(value: str, field: str) -> bool:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadLookRequest(f"{field}: expected true or false, got {value!r}")


def _request(tool: str, namespace: str, name: str, args: dict[str, str], where: str) -> LookRequest:
    """A LookRequest from string arguments (Argo's query string, Flagger's metadata)."""
    unknown = sorted(set(args) - set(METADATA_KEYS))
    if unknown:
        raise BadLookRequest(f"{where}: unknown key(s) {unknown}; known: {', '.join(METADATA_KEYS)}")
    blank = [k for k, v in args.items() if not v.strip()]
    if blank:  # an unset Argo arg renders as an empty string: refuse rather than guess
        raise BadLookRequest(f"{where}: empty value for {blank}")
    return LookRequest(
        tool=tool,
        namespace=namespace,
        name=name,
        revision=args.get("revision", ""),
        promotion=args.get("promotion"),
        step=_parse_int(args["step"], f"{where}.step") if "step" in args else None,
        weight=_parse_float(args["weight"], f"{where}.weight") if "weight" in args else None,
        start=_parse_time(args["start"], f"{where}.start") if "start" in args else None,
        end=_parse_time(args["end"], f"{where}.end") if "end" in args else None,
        deadline=_parse_bool(args["deadline"], f"{where}.deadline") if "deadline" in args else False,
    )


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"verdict": "ERROR", "decision": None, "error": message}, status_code=400)


def create_app(judge: Judge) -> FastAPI:
    """The ASGI app around one :class:`Judge`."""
    app = FastAPI(title="stagegate judge", version="1", docs_url=None, redoc_url=None)
    app.state.judge = judge

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # e.g. the state database is down: never a 2xx, never a verdict that could read as a success
        return JSONResponse(
            {"verdict": "ERROR", "decision": None, "error": f"judge failed: {exc!r}"}, status_code=500
        )

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        setup = judge.setup
        return {
            "status": "ok",
            "policy": setup.policy_file,
            "stage": setup.stage_name,
            "rule": setup.gates.rule,
            "gates": [g.name for g in setup.gates],
            "look_every_seconds": setup.look_every.total_seconds(),
        }

    @app.get(ARGO_ROUTE)
    def argo(namespace: str, rollout: str, request: Request) -> JSONResponse:
        args = dict(request.query_params)
        try:
            result = judge.look(_request("argo", namespace, rollout, args, "query"))
        except BadLookRequest as exc:
            return _bad(str(exc))
        return JSONResponse(result.answer, status_code=status_for(Hook.ARGO, result.verdict, result.decision))

    def flagger(hook: Hook, payload: FlaggerPayload) -> JSONResponse:
        metadata = dict(payload.metadata)
        if payload.checksum and "revision" not in metadata:
            metadata["revision"] = payload.checksum  # a new checksum is a new canary
        try:
            look = _request("flagger", payload.namespace, payload.name, metadata, "metadata")
            result = judge.look(look)
        except BadLookRequest as exc:
            return _bad(str(exc))
        answer = dict(result.answer)
        answer["hook"] = hook.value
        answer["phase"] = payload.phase
        status = status_for(hook, result.verdict, result.decision)
        if hook is Hook.CONFIRM_TRAFFIC_INCREASE and judge.open_first_step(look, result):
            status = 200
            answer["first_step"] = (
                "no canary traffic measured yet: the first traffic increase goes ahead once, so that "
                "there is evidence to judge; the verdict stays ERROR until a look is measured"
            )
        return JSONResponse(answer, status_code=status)

    def route(hook: Hook) -> Any:
        def endpoint(payload: FlaggerPayload) -> JSONResponse:
            return flagger(hook, payload)

        return endpoint

    for hook, path in FLAGGER_ROUTES.items():
        app.add_api_route(path, route(hook), methods=["POST"], name=f"flagger-{hook.value}")

    return app
