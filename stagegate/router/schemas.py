"""What crosses the router's HTTP API: the recommendation request and answer, the admin bodies.

The request carries the ranking contract's input (stagegate.contract.INPUT_COLUMNS): ``request_id``,
``user_id``, ``candidate_items`` and the optional context columns; unknown fields are refused (a typo is
an error, not a silently ignored option)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Context(BaseModel):
    """The contract's optional input columns."""

    model_config = ConfigDict(extra="forbid")

    device: int | None = Field(default=None, ge=0)
    hour: int | None = Field(default=None, ge=0, le=23)
    user_segment: int | None = Field(default=None, ge=0)
    t: float | None = None
    recent_items: list[int] | None = None


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    user_id: int
    candidate_items: list[int] = Field(min_length=1)
    k: int = Field(default=10, ge=1)
    context: Context = Field(default_factory=Context)


class RecommendResponse(BaseModel):
    """``arm`` is the arm the user is in; ``served_by`` the version whose answer this is (the champion's
    when the candidate failed: then ``fallback`` is True)."""

    request_id: str
    arm: str
    version: str
    served_by: str
    fallback: bool
    item_ids: list[int]
    scores: list[float]


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    champion: str | None = None
