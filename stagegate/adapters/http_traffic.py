"""The ``http`` traffic controller: a router's admin API over HTTP (entry-point group ``stagegate.traffic``).

The admin API contract (a router implements it; tests/proof/fake_router.py is a small one):

- every request carries ``Authorization: Bearer <token>``; a missing or wrong token is 401;
- ``GET /admin/split`` -> 200 ``{"champion": str|null, "candidate": str|null, "candidate_weight": float,
  "shadow": bool}``, the split in force;
- ``PUT /admin/split`` with that JSON body -> 200 with the split now in force (422 on a malformed body);
- ``POST /admin/rollback`` with ``{"champion": str|null}`` -> 200 with the split now in force.

Every non-2xx answer, every network error or timeout, and every answer that is not a split raises
:class:`~stagegate.ports.TrafficError` naming the URL and the status, so nothing may assume traffic moved.
``rollback`` reads the split back with a GET and raises unless everyone is on the champion. The token is
resolved from its secret reference when the adapter is built and is never logged or put in an error.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stagegate.connections.secrets import SecretRef
from stagegate.ports import Split, TrafficError


class HttpTrafficController:
    """Gets, sets and rolls back the split through a router's admin API (module docstring)."""

    class Config(BaseModel):
        """``base_url``: the router's admin endpoint root (``http://router:8080``); ``token``: the bearer
        token as a secret reference (``{env: NAME}`` or ``{prefect_secret: BLOCK}``); ``timeout_seconds``:
        per request (connect, read, write)."""

        model_config = ConfigDict(extra="forbid")

        base_url: str = Field(pattern=r"^https?://[^\s/]+")
        token: SecretRef
        timeout_seconds: float = Field(default=10.0, gt=0.0, le=300.0)

    def __init__(self, base_url: str, token: str, timeout_seconds: float = 10.0) -> None:
        import httpx

        if not token:
            raise ValueError("the router's admin token is empty")
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_seconds),
        )

    @classmethod
    def from_config(cls, config: Config, host: Any) -> HttpTrafficController:
        return cls(config.base_url, config.token.resolve(), config.timeout_seconds)

    def __repr__(self) -> str:  # never the token
        return f"HttpTrafficController({self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Split:
        import httpx

        url = f"{self.base_url}{path}"
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:  # connect, read or write error, or a timeout
            raise TrafficError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            detail = response.text[:300].replace("\n", " ")
            raise TrafficError(f"{method} {url} answered {response.status_code}: {detail}")
        try:
            return Split.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise TrafficError(
                f"{method} {url} answered {response.status_code} with something that is not a split: {exc}"
            ) from exc

    def get_split(self) -> Split:
        return self._call("GET", "/admin/split")

    def set_split(self, split: Split) -> None:
        """Make ``split`` the one in force; raises TrafficError unless the router answers with it."""
        back = self._call("PUT", "/admin/split", split.model_dump(mode="json"))
        if back != split:
            raise TrafficError(
                f"PUT {self.base_url}/admin/split answered with {back!r}, not the split sent ({split!r})"
            )

    def rollback(self, champion: str | None = None) -> Split:
        """Everyone to ``champion`` (default: the router's current champion), shadow off; read back."""
        self._call("POST", "/admin/rollback", {"champion": champion})
        back = self.get_split()
        if not back.is_all_champion or (champion is not None and back.champion != champion):
            raise TrafficError(
                f"rollback did not take: GET {self.base_url}/admin/split reads {back!r}, expected everyone "
                f"on champion {champion if champion is not None else back.champion!r}"
            )
        return back
