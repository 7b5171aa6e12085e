"""The ``sagemaker`` traffic controller: production-variant weights of one AWS SageMaker endpoint.

- ``set_split`` sets the variants' weights with ``update_endpoint_weights_and_capacities`` (the candidate's
  variant gets ``candidate_weight``, the champion's the rest, every other known variant 0); a split with
  ``shadow`` on starts a ``ShadowMode`` inference experiment that mirrors the champion's requests to the
  candidate's model (``create_inference_experiment``), and a split without it stops the one stagegate
  started (``stop_inference_experiment``).
- ``rollback`` sends 100% to the champion's variant and stops any shadow experiment stagegate started.
- After EVERY change the endpoint is read back with ``describe_endpoint``: it must be ``InService`` (waited
  for within ``in_service_timeout_seconds``), on the same ``EndpointConfigName`` as before the change, with
  every variant's ``CurrentWeight`` and ``DesiredWeight`` equal to what was sent. SageMaker can roll an
  update back silently and return to InService on the old configuration; waiting for InService alone would
  record that as success. Any disagreement raises TrafficError naming the endpoint, the variant and both
  weights.
- ``get_split`` derives the split from ``describe_endpoint`` (the weights are the truth). Which version
  plays which role is stagegate's own record, kept as tags on the endpoint (``stagegate:champion``,
  ``stagegate:candidate``, ``stagegate:shadow-experiment``), written before the weights move, so that a
  crash between the two leaves a record that disagrees with the weights (TrafficError) rather than one
  that silently lies.

Credentials come only from boto3's own chain (environment variables, ``~/.aws``, an instance or task role);
the connections file holds none. Every AWS call runs with bounded connect/read timeouts and a bounded
number of attempts (botocore's ``standard`` retry mode).

What moto (the local AWS emulator the tests use) does not emulate: inference experiments (create, stop,
describe, list: HTTP 500 NotImplementedError), ``update_endpoint``, gradual weight changes (it applies
weights at once and never reports ``Updating``) and silent rollbacks. docs/adapters/sagemaker.md lists
what each test covers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stagegate.ports import Split, TrafficError

TAG_CHAMPION = "stagegate:champion"
TAG_CANDIDATE = "stagegate:candidate"
TAG_SHADOW = "stagegate:shadow-experiment"
TAG_SHADOW_SOURCE = "stagegate:shadow-source"
_TAGS = (TAG_CHAMPION, TAG_CANDIDATE, TAG_SHADOW, TAG_SHADOW_SOURCE)

# Statuses an endpoint passes through on its way back to InService; anything else (Failed, Deleting,
# OutOfService) ends the wait at once.
_TRANSIENT = {"Creating", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed"}
_EXPERIMENT_RUNNING = "Running"
_EXPERIMENT_PENDING = {"Creating", "Created", "Starting", "Updating"}
_EXPERIMENT_NAME = re.compile(r"[^a-zA-Z0-9-]+")


class ShadowConfig(BaseModel):
    """How a shadow inference experiment is started: the role SageMaker assumes, the shadow variant's
    infrastructure and the share of the champion's requests mirrored to it."""

    model_config = ConfigDict(extra="forbid")

    role_arn: str = Field(pattern=r"^arn:aws[a-z\-]*:iam::\d{12}:role/.+$")
    instance_type: str = "ml.m5.large"
    instance_count: int = Field(default=1, ge=1)
    sampling_percentage: int = Field(default=100, ge=1, le=100)
    shadow_variant_name: str = Field(
        default="stagegate-shadow", pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
    )
    #: longest a shadow experiment may run before SageMaker ends it itself (ScheduleEndTime)
    max_days: float = Field(default=30.0, gt=0, le=30)


class SageMakerTrafficController:
    """Who serves on one SageMaker endpoint, through its production variants' weights (module docstring)."""

    class Config(BaseModel):
        """Either ``champion_variant`` and ``candidate_variant`` (two variants with fixed roles: whatever
        versions are deployed on them) or ``variants`` (each version deployed as its own variant:
        ``{version: variant name}``). ``endpoint_url`` is for a local emulator (moto); leave it out for
        AWS. Timeouts are in seconds; ``max_attempts`` counts the first try."""

        model_config = ConfigDict(extra="forbid")

        endpoint_name: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
        region: str = Field(min_length=1)
        endpoint_url: str | None = None
        champion_variant: str | None = None
        candidate_variant: str | None = None
        variants: dict[str, str] | None = None
        shadow: ShadowConfig | None = None
        connect_timeout_seconds: float = Field(default=5.0, gt=0)
        read_timeout_seconds: float = Field(default=30.0, gt=0)
        max_attempts: int = Field(default=3, ge=1, le=10)
        in_service_timeout_seconds: float = Field(default=900.0, gt=0)
        poll_seconds: float = Field(default=10.0, gt=0)
        #: largest difference between a weight sent and the weight read back that still counts as equal
        weight_tolerance: float = Field(default=1e-6, ge=0)

        @model_validator(mode="after")
        def _one_mode(self) -> SageMakerTrafficController.Config:
            roles = (self.champion_variant, self.candidate_variant)
            if self.variants is not None:
                if any(r is not None for r in roles):
                    raise ValueError("give either variants or champion_variant/candidate_variant, not both")
                if not self.variants:
                    raise ValueError("variants must map at least one version to a variant name")
                names = list(self.variants.values())
                if len(set(names)) != len(names):
                    raise ValueError("variants: two versions map to the same variant name")
            elif None in roles:
                raise ValueError("give champion_variant and candidate_variant, or variants")
            elif self.champion_variant == self.candidate_variant:
                raise ValueError("champion_variant and candidate_variant must differ")
            return self

    def __init__(
        self,
        config: Config,
        *,
        client: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.endpoint = config.endpoint_name
        self.client = client if client is not None else make_client(config)
        self._sleep = sleep
        self._monotonic = monotonic

    @classmethod
    def from_config(cls, config: Config, host: Any) -> SageMakerTrafficController:
        return cls(config)

    # -- the port --------------------------------------------------------------------------------------

    def get_split(self) -> Split:
        """The split in force, from ``describe_endpoint``'s weights and stagegate's role tags.

        TrafficError when the endpoint cannot be read, a variant reports no weight, or the weights
        disagree with the recorded roles (traffic on a variant outside the split, a candidate share with
        no candidate recorded)."""
        described = self._describe()
        weights = self._weights(described, current=True)
        tags = self._tags(described["EndpointArn"])
        champion, candidate = tags.get(TAG_CHAMPION), tags.get(TAG_CANDIDATE)
        shadow = TAG_SHADOW in tags
        if self.config.variants is None:
            champ_var, cand_var = str(self.config.champion_variant), str(self.config.candidate_variant)
        else:
            if champion is None:
                serving = sorted(v for v, w in weights.items() if w > 0)
                raise TrafficError(
                    f"SageMaker endpoint {self.endpoint}: stagegate has never set a split here (no "
                    f"{TAG_CHAMPION} tag), yet variants {serving} serve; set one before reading it"
                )
            champ_var = self._variant_of(champion)
            cand_var = self._variant_of(candidate) if candidate is not None else None
        for variant, weight in weights.items():
            if variant not in (champ_var, cand_var) and weight > self.config.weight_tolerance:
                raise TrafficError(
                    f"SageMaker endpoint {self.endpoint}: variant {variant} has weight {weight:g} but is "
                    f"not in the recorded split (champion {champion} on {champ_var}, candidate "
                    f"{candidate} on {cand_var})"
                )
        if champ_var not in weights:
            raise TrafficError(f"SageMaker endpoint {self.endpoint} has no variant {champ_var}")
        cand_weight = weights.get(cand_var, 0.0) if cand_var is not None else 0.0
        total = weights[champ_var] + cand_weight
        if total <= 0:
            raise TrafficError(
                f"SageMaker endpoint {self.endpoint}: champion and candidate weights are both 0"
            )
        share = cand_weight / total
        if candidate is None and share > self.config.weight_tolerance:
            raise TrafficError(
                f"SageMaker endpoint {self.endpoint}: variant {cand_var} serves {share:.4g} of the traffic "
                f"but no candidate version is recorded ({TAG_CANDIDATE} tag)"
            )
        return Split(champion=champion, candidate=candidate, candidate_weight=round(share, 12), shadow=shadow)

    def set_split(self, split: Split) -> None:
        """Make ``split`` the one in force; returns only after the read-back agrees (module docstring)."""
        if split.candidate is None and split.candidate_weight > 0:
            raise TrafficError(f"split {split!r} gives weight to a candidate it does not name")
        if split.shadow and split.candidate is None:
            raise TrafficError(f"split {split!r}: shadow needs a candidate to mirror traffic to")
        desired = self._desired_weights(split)
        before = self._describe()
        arn = before["EndpointArn"]
        tags = self._tags(arn)
        running = tags.get(TAG_SHADOW)
        # A running shadow of another candidate is replaced, not kept.
        keep = running is not None and split.shadow and tags.get(TAG_CANDIDATE) == split.candidate
        self._write_roles(arn, split)
        if running is not None and not keep:
            self._stop_shadow(arn, tags)
        self._apply_weights(before, desired)
        if split.shadow and not keep:
            self._start_shadow(arn, split, desired)

    def rollback(self, champion: str | None = None) -> Split:
        """All traffic to the champion, any shadow experiment stagegate started stopped; read back.

        The weights move first (that is what stops harm), then the shadow experiment is stopped; either
        failing raises TrafficError."""
        if champion is None:
            champion = self._tags(self._describe()["EndpointArn"]).get(TAG_CHAMPION)
            if champion is None and self.config.variants is not None:
                raise TrafficError(
                    f"SageMaker endpoint {self.endpoint}: no champion given and none recorded "
                    f"({TAG_CHAMPION} tag): cannot tell which variant to send everyone to"
                )
        split = Split(champion=champion)
        before = self._describe()
        arn = before["EndpointArn"]
        tags = self._tags(arn)
        self._write_roles(arn, split)
        self._apply_weights(before, self._desired_weights(split))
        if TAG_SHADOW in tags:
            self._stop_shadow(arn, tags)
        back = self.get_split()
        if not back.is_all_champion or back.shadow or back.champion != champion:
            raise TrafficError(f"rollback did not take: endpoint {self.endpoint} reads {back!r}")
        return back

    # -- weights ---------------------------------------------------------------------------------------

    def _variant_of(self, version: str) -> str:
        if self.config.variants is None:
            raise AssertionError("role mode has no version map")
        if version not in self.config.variants:
            raise TrafficError(
                f"SageMaker endpoint {self.endpoint}: version {version!r} has no variant in the "
                f"connections file (variants: {sorted(self.config.variants)})"
            )
        return self.config.variants[version]

    def _desired_weights(self, split: Split) -> dict[str, float]:
        """Weight of every variant stagegate manages: the candidate's share, the champion the rest."""
        share = split.candidate_weight if split.candidate is not None else 0.0
        if self.config.variants is None:
            return {
                str(self.config.champion_variant): 1.0 - share,
                str(self.config.candidate_variant): share,
            }
        if split.champion is None:
            raise TrafficError(
                f"SageMaker endpoint {self.endpoint}: a split without a champion version cannot be mapped "
                "to a variant (variants mode)"
            )
        weights = dict.fromkeys(self.config.variants.values(), 0.0)
        champ = self._variant_of(split.champion)
        weights[champ] = 1.0 - share
        if split.candidate is not None:
            cand = self._variant_of(split.candidate)
            if cand == champ:
                raise TrafficError(f"champion and candidate are both on variant {champ}")
            weights[cand] = share
        return weights

    def _apply_weights(self, before: Mapping[str, Any], desired: Mapping[str, float]) -> None:
        present = {v["VariantName"] for v in before.get("ProductionVariants", [])}
        missing = sorted(set(desired) - present)
        if missing:
            raise TrafficError(
                f"SageMaker endpoint {self.endpoint} has no production variant(s) {missing} "
                f"(it has {sorted(present)})"
            )
        self._call(
            "UpdateEndpointWeightsAndCapacities",
            self.client.update_endpoint_weights_and_capacities,
            EndpointName=self.endpoint,
            DesiredWeightsAndCapacities=[
                {"VariantName": name, "DesiredWeight": float(weight)} for name, weight in desired.items()
            ],
        )
        self._read_back(str(before["EndpointConfigName"]), desired)

    def _read_back(self, config_name: str | None, desired: Mapping[str, float]) -> None:
        """Wait (bounded) until the endpoint is InService with exactly ``desired``; else TrafficError.

        A DesiredWeight other than ours or another EndpointConfigName (unless ``config_name`` is None:
        a shadow experiment deploys its own config) means the change was undone (a silent rollback, or
        someone else): raised at once. CurrentWeight lagging DesiredWeight while InService is waited out
        until the deadline."""
        deadline = self._monotonic() + self.config.in_service_timeout_seconds
        tol = self.config.weight_tolerance
        while True:
            described = self._describe()
            status = described.get("EndpointStatus")
            if status == "InService":
                if config_name is not None and described.get("EndpointConfigName") != config_name:
                    raise TrafficError(
                        f"SageMaker endpoint {self.endpoint} is InService on endpoint config "
                        f"{described.get('EndpointConfigName')!r}, not {config_name!r} as before the "
                        "change: the update was rolled back or replaced; nothing is assumed to have moved"
                    )
                variants = {v["VariantName"]: v for v in described.get("ProductionVariants", [])}
                lagging = None
                for name, want in desired.items():
                    variant = variants.get(name)
                    if variant is None:
                        raise TrafficError(f"SageMaker endpoint {self.endpoint}: variant {name} disappeared")
                    got_desired = variant.get("DesiredWeight")
                    if got_desired is None or abs(float(got_desired) - want) > tol:
                        raise TrafficError(
                            f"SageMaker endpoint {self.endpoint}: variant {name} reads DesiredWeight "
                            f"{got_desired} after the change, stagegate sent {want:g}: the update did "
                            "not take or was rolled back"
                        )
                    got_current = variant.get("CurrentWeight")
                    if got_current is None or abs(float(got_current) - want) > tol:
                        lagging = (name, got_current, want)
                if lagging is None:
                    return
                if self._monotonic() >= deadline:
                    name, got, want = lagging
                    raise TrafficError(
                        f"SageMaker endpoint {self.endpoint}: variant {name} still serves CurrentWeight "
                        f"{got} after {self.config.in_service_timeout_seconds:g} s, stagegate sent {want:g}"
                    )
            elif status not in _TRANSIENT:
                raise TrafficError(
                    f"SageMaker endpoint {self.endpoint} is {status} after the change: "
                    f"{described.get('FailureReason', 'no failure reason given')}"
                )
            elif self._monotonic() >= deadline:
                raise TrafficError(
                    f"SageMaker endpoint {self.endpoint} is still {status} after "
                    f"{self.config.in_service_timeout_seconds:g} s; nothing is assumed to have moved"
                )
            self._sleep(self.config.poll_seconds)

    def _weights(self, described: Mapping[str, Any], *, current: bool) -> dict[str, float]:
        key = "CurrentWeight" if current else "DesiredWeight"
        weights = {}
        for variant in described.get("ProductionVariants", []):
            if key not in variant:
                raise TrafficError(
                    f"SageMaker endpoint {self.endpoint}: variant {variant['VariantName']} reports no {key}"
                )
            weights[variant["VariantName"]] = float(variant[key])
        if not weights:
            raise TrafficError(f"SageMaker endpoint {self.endpoint} has no production variants")
        return weights

    # -- shadow experiments ----------------------------------------------------------------------------

    def _experiment_name(self, candidate: str) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        base = _EXPERIMENT_NAME.sub("-", f"sg-{self.endpoint}-{candidate}").strip("-")
        return f"{base[: 120 - len(stamp) - 1]}-{stamp}"

    def shadow_request(
        self, split: Split, name: str, source: Mapping[str, Any], candidate: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The ``create_inference_experiment`` request for ``split``: ``source`` and ``candidate`` are the
        champion's and the candidate's production variants as the endpoint config lists them (VariantName,
        ModelName, InstanceType, InitialInstanceCount). The experiment holds one entry per variant: the
        production variant on its own infrastructure, the shadow variant running the candidate's model
        on the ``shadow`` section's. Public so that a test can check it against botocore's model."""
        shadow = self.config.shadow
        if shadow is None:
            raise TrafficError(
                f"SageMaker endpoint {self.endpoint}: a shadow split needs the `shadow` section "
                "(role_arn, instance type) in the connections file"
            )
        if "InstanceType" not in source:
            raise TrafficError(
                f"SageMaker endpoint {self.endpoint}: production variant {source.get('VariantName')} has no "
                "InstanceType (serverless?): a shadow experiment needs real-time instances"
            )
        now = datetime.now(UTC)

        def variant(model: str, variant_name: str, instance_type: str, count: int) -> dict[str, Any]:
            return {
                "ModelName": model,
                "VariantName": variant_name,
                "InfrastructureConfig": {
                    "InfrastructureType": "RealTimeInference",
                    "RealTimeInferenceConfig": {"InstanceType": instance_type, "InstanceCount": count},
                },
            }

        return {
            "Name": name,
            "Type": "ShadowMode",
            "Description": f"stagegate shadow of candidate {split.candidate} against {split.champion}",
            "RoleArn": shadow.role_arn,
            "EndpointName": self.endpoint,
            "Schedule": {"StartTime": now, "EndTime": now + timedelta(days=shadow.max_days)},
            "ModelVariants": [
                variant(
                    str(source["ModelName"]),
                    str(source["VariantName"]),
                    str(source["InstanceType"]),
                    int(source.get("InitialInstanceCount", 1)),
                ),
                variant(
                    str(candidate["ModelName"]),
                    shadow.shadow_variant_name,
                    shadow.instance_type,
                    shadow.instance_count,
                ),
            ],
            "ShadowModeConfig": {
                "SourceModelVariantName": str(source["VariantName"]),
                "ShadowModelVariants": [
                    {
                        "ShadowModelVariantName": shadow.shadow_variant_name,
                        "SamplingPercentage": shadow.sampling_percentage,
                    }
                ],
            },
        }

    def _role_variants(self, split: Split) -> tuple[str, str]:
        """The champion's and the candidate's variant names for ``split``."""
        if self.config.variants is None:
            return str(self.config.champion_variant), str(self.config.candidate_variant)
        return self._variant_of(str(split.champion)), self._variant_of(str(split.candidate))

    def _config_variants(self, config_name: str, names: tuple[str, ...]) -> list[dict[str, Any]]:
        """The production variants ``names`` as endpoint config ``config_name`` lists them."""
        cfg = self._call(
            "DescribeEndpointConfig", self.client.describe_endpoint_config, EndpointConfigName=config_name
        )
        listed = {v.get("VariantName"): v for v in cfg.get("ProductionVariants", [])}
        missing = [n for n in names if n not in listed]
        if missing:
            raise TrafficError(
                f"endpoint config {config_name} has no variant(s) {missing} for the shadow test"
            )
        return [listed[n] for n in names]

    def _start_shadow(self, arn: str, split: Split, desired: Mapping[str, float]) -> None:
        described = self._describe()
        source, candidate = self._config_variants(
            str(described["EndpointConfigName"]), self._role_variants(split)
        )
        request = self.shadow_request(split, self._experiment_name(str(split.candidate)), source, candidate)
        # Recorded before it is created, so that a crash in between still gets it stopped by rollback.
        self._add_tags(arn, {TAG_SHADOW: request["Name"], TAG_SHADOW_SOURCE: str(source["VariantName"])})
        self._call("CreateInferenceExperiment", self.client.create_inference_experiment, **request)
        self._wait_experiment(request["Name"])
        # The experiment deploys its own endpoint config: the production weights must still be ours.
        self._read_back(None, desired)

    def _wait_experiment(self, name: str) -> None:
        deadline = self._monotonic() + self.config.in_service_timeout_seconds
        while True:
            got = self._call(
                "DescribeInferenceExperiment", self.client.describe_inference_experiment, Name=name
            )
            status = got.get("Status")
            if status == _EXPERIMENT_RUNNING:
                if got.get("EndpointMetadata", {}).get("EndpointName", self.endpoint) != self.endpoint:
                    raise TrafficError(f"shadow experiment {name} runs on another endpoint: {got}")
                return
            if status not in _EXPERIMENT_PENDING:
                raise TrafficError(
                    f"shadow experiment {name} on SageMaker endpoint {self.endpoint} is {status}: "
                    f"{got.get('StatusReason', 'no reason given')}"
                )
            if self._monotonic() >= deadline:
                raise TrafficError(
                    f"shadow experiment {name} on SageMaker endpoint {self.endpoint} still {status} after "
                    f"{self.config.in_service_timeout_seconds:g} s"
                )
            self._sleep(self.config.poll_seconds)

    def _stop_shadow(self, arn: str, tags: Mapping[str, str]) -> None:
        """Stop the experiment stagegate started (``tags`` as recorded before this change): the production
        variant retained, the shadow variant removed; then forget it."""
        from botocore.exceptions import ClientError

        name = tags[TAG_SHADOW]
        shadow_variant = self.config.shadow.shadow_variant_name if self.config.shadow else "stagegate-shadow"
        actions = {shadow_variant: "Remove"}
        if TAG_SHADOW_SOURCE in tags:
            actions[tags[TAG_SHADOW_SOURCE]] = "Retain"
        try:
            self.client.stop_inference_experiment(
                Name=name, ModelVariantActions=actions, Reason="stagegate: shadow off"
            )
        except ClientError as exc:
            # Already gone (finished on its schedule, or stopped by someone): nothing left to stop.
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFound":
                raise TrafficError(
                    f"SageMaker endpoint {self.endpoint}: StopInferenceExperiment {name} failed: {exc}"
                ) from exc
        except Exception as exc:
            raise TrafficError(
                f"SageMaker endpoint {self.endpoint}: StopInferenceExperiment {name} failed: {exc}"
            ) from exc
        self._call(
            "DeleteTags", self.client.delete_tags, ResourceArn=arn, TagKeys=[TAG_SHADOW, TAG_SHADOW_SOURCE]
        )

    # -- AWS calls -------------------------------------------------------------------------------------

    def _call(self, operation: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        """One AWS call; any botocore error becomes TrafficError naming the endpoint and the operation."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return method(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise TrafficError(f"SageMaker endpoint {self.endpoint}: {operation} failed: {exc}") from exc

    def _describe(self) -> dict[str, Any]:
        return self._call("DescribeEndpoint", self.client.describe_endpoint, EndpointName=self.endpoint)

    def _tags(self, arn: str) -> dict[str, str]:
        got = self._call("ListTags", self.client.list_tags, ResourceArn=arn)
        return {t["Key"]: t["Value"] for t in got.get("Tags", []) if t["Key"] in _TAGS}

    def _add_tags(self, arn: str, tags: Mapping[str, str]) -> None:
        self._call(
            "AddTags",
            self.client.add_tags,
            ResourceArn=arn,
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )

    def _write_roles(self, arn: str, split: Split) -> None:
        """Record which version plays which role, before the weights move (module docstring)."""
        roles = {TAG_CHAMPION: split.champion, TAG_CANDIDATE: split.candidate}
        present = {k: v for k, v in roles.items() if v is not None}
        absent = [k for k, v in roles.items() if v is None]
        if present:
            self._add_tags(arn, present)
        if absent:
            self._call("DeleteTags", self.client.delete_tags, ResourceArn=arn, TagKeys=absent)


def make_client(config: SageMakerTrafficController.Config) -> Any:
    """A boto3 SageMaker client with bounded timeouts and attempts; credentials from boto3's chain."""
    import boto3
    from botocore.config import Config as BotoConfig

    boto = BotoConfig(
        connect_timeout=config.connect_timeout_seconds,
        read_timeout=config.read_timeout_seconds,
        retries={"max_attempts": config.max_attempts, "mode": "standard"},
    )
    return boto3.client("sagemaker", region_name=config.region, endpoint_url=config.endpoint_url, config=boto)
