"""The model registry (MLflow): versions, the champion/candidate/previous aliases, status tags.

Aliases say who serves; model-version tags say where each version got to and why:
``stagegate.stage`` (the last stage entered), ``stagegate.status`` (registered, in_progress, promoted,
rejected, rolled_back, aborted) and ``stagegate.reason``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any

from stagegate.redaction import redact_url

CHAMPION_ALIAS = "champion"
CANDIDATE_ALIAS = "candidate"
PREVIOUS_ALIAS = "previous"
TAG_STAGE = "stagegate.stage"
TAG_STATUS = "stagegate.status"
TAG_REASON = "stagegate.reason"
TAG_PROMOTION = "stagegate.promotion_id"


class RegistryError(LookupError):
    """A model, version or alias that does not exist (the message names it)."""


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    source: str
    run_id: str | None
    tags: dict[str, str]
    aliases: list[str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class RegistryDown(RegistryError):
    """The tracking server does not answer: said within seconds, never read as "the model does not exist"."""


#: How long a tracking server may take to answer its health check before it is reported down. MLflow's
#: own client retries a refused connection with backoff for minutes (seen: 250 s, then "does not exist").
PROBE_SECONDS = 3.0


class Registry:
    def __init__(self, tracking_uri: str) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._answered = not tracking_uri.startswith(("http://", "https://"))  # a file store needs no probe

    def check_reachable(self) -> None:
        """Raise RegistryDown unless an HTTP tracking server answers its /health within PROBE_SECONDS
        (checked once per Registry; a local SQLite or file store always passes)."""
        if self._answered:
            return
        import urllib.error
        import urllib.request

        url = self.tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=PROBE_SECONDS) as answer:
                answer.read(64)
        except urllib.error.HTTPError:
            pass  # it answered (a proxy's 401 or 404 included): the calls themselves say what is wrong
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryDown(
                f"MLflow at {redact_url(self.tracking_uri)} does not answer ({reason}; waited "
                f"{PROBE_SECONDS:g} s): is the server running? (`stagegate up`, or STAGEGATE_MLFLOW_URI)"
            ) from None
        self._answered = True

    def _missing(self, exc: Exception, what: str) -> RegistryError:
        """``what`` does not exist, if MLflow says so; any other failure is not a missing model."""
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return RegistryError(what)
        return RegistryError(f"MLflow at {redact_url(self.tracking_uri)} failed: {exc}")

    @staticmethod
    def _info(mv: Any) -> VersionInfo:
        return VersionInfo(
            mv.name, str(mv.version), mv.source, mv.run_id, dict(mv.tags or {}), list(mv.aliases or [])
        )

    def get_version(self, model: str, version: str | int) -> VersionInfo:
        from mlflow.exceptions import MlflowException

        self.check_reachable()
        try:
            self.client.get_registered_model(model)
        except MlflowException as exc:
            where = redact_url(self.tracking_uri)
            raise self._missing(exc, f"registered model {model!r} does not exist at {where}") from None
        try:
            return self._info(self.client.get_model_version(model, str(version)))
        except MlflowException as exc:
            raise self._missing(exc, f"model {model!r} has no version {version!r}") from None

    def get_alias(self, model: str, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self.client.get_model_version_by_alias(model, alias))
        except MlflowException:
            return None

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(model, alias, str(version))

    def delete_alias(self, model: str, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # already absent is the desired end state
            self.client.delete_registered_model_alias(model, alias)

    def tag(self, model: str, version: str, **tags: str) -> None:
        names = {
            "stage": TAG_STAGE,
            "status": TAG_STATUS,
            "reason": TAG_REASON,
            "promotion_id": TAG_PROMOTION,
        }
        for key, value in tags.items():
            self.client.set_model_version_tag(model, str(version), names.get(key, key), str(value)[:5000])

    def versions(self, model: str) -> list[VersionInfo]:
        """Every version of ``model`` with its aliases. search_model_versions leaves ``aliases`` empty, so
        they come from the registered model (alias -> version)."""
        from mlflow.exceptions import MlflowException

        self.check_reachable()
        try:
            by_alias = dict(self.client.get_registered_model(model).aliases or {})
        except MlflowException as exc:
            where = redact_url(self.tracking_uri)
            raise self._missing(exc, f"registered model {model!r} does not exist at {where}") from None
        infos = []
        for mv in self.client.search_model_versions(f"name='{model}'"):
            info = self._info(mv)
            mine = {a for a, v in by_alias.items() if str(v) == info.version}
            infos.append(replace(info, aliases=sorted(set(info.aliases) | mine)))
        return sorted(infos, key=lambda v: int(v.version))
