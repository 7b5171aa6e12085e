"""infra/k8s's AnalysisTemplate and Canary against the judge they call: the same paths, arguments,
conditions and answer field. No Kubernetes cluster here: the manifests are parsed and their requests
replayed against the app, not applied (docs/adapters/argo-flagger.md says so).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import yaml
from fastapi.testclient import TestClient

from stagegate.decision import Decision
from stagegate.judge.app import FLAGGER_ROUTES, METADATA_KEYS
from stagegate.judge.verdicts import Hook, JudgeVerdict, status_for
from tests.judge.conftest import ARGO_HEADERS, FLAGGER_HEADERS

ROOT = Path(__file__).resolve().parents[2]
ARGO = ROOT / "infra/k8s/argo-analysistemplate.yaml"
FLAGGER = ROOT / "infra/k8s/flagger-canary.yaml"


def _argo_documents() -> tuple[dict, dict]:
    template, rollout = list(yaml.safe_load_all(ARGO.read_text()))
    assert template["kind"] == "AnalysisTemplate" and rollout["kind"] == "Rollout"
    return template, rollout


def _condition(expression: str) -> str:
    """The verdict a condition of the form ``result == "X"`` accepts (the only form the template uses)."""
    match = re.fullmatch(r'result == "([A-Z]+)"', expression.strip())
    assert match, f"unexpected condition {expression!r}"
    return match.group(1)


def argo_phase(result: str, success: str, failure: str) -> str:
    """Argo's utils/evaluate EvaluateResult with both conditions set: Failed wins, neither is
    Inconclusive."""
    if result == _condition(failure):
        return "Failed"
    if result == _condition(success):
        return "Successful"
    return "Inconclusive"


def test_analysis_template_conditions_keep_inconclusive_and_error_apart() -> None:
    template, _ = _argo_documents()
    (metric,) = template["spec"]["metrics"]
    success, failure = metric["successCondition"], metric["failureCondition"]
    assert _condition(success) == JudgeVerdict.PASS and _condition(failure) == JudgeVerdict.FAIL
    assert argo_phase("PASS", success, failure) == "Successful"
    assert argo_phase("FAIL", success, failure) == "Failed"
    assert argo_phase("INCONCLUSIVE", success, failure) == "Inconclusive"  # neither condition true
    # ERROR never reaches the conditions: it is a 5xx, which the web provider records as an Error.
    assert status_for(Hook.ARGO, JudgeVerdict.ERROR, Decision.CONTINUE) >= 500
    for limit in ("inconclusiveLimit", "consecutiveErrorLimit", "failureLimit"):
        assert isinstance(metric[limit], int), f"{limit} must be explicit"
    assert metric["count"] > metric["inconclusiveLimit"]
    assert metric["provider"]["web"]["jsonPath"] == "{$.verdict}"


def _render(url: str, args: dict[str, str]) -> str:
    used = set(re.findall(r"\{\{\s*args\.([\w-]+)\s*\}\}", url))
    missing = used - set(args)
    assert not missing, f"the URL uses undeclared args {missing}"
    return re.sub(r"\{\{\s*args\.([\w-]+)\s*\}\}", lambda m: args[m.group(1)], url)


def test_rollout_steps_pass_every_template_argument() -> None:
    template, rollout = _argo_documents()
    declared = {a["name"] for a in template["spec"]["args"]}
    analyses = [s["analysis"] for s in rollout["spec"]["strategy"]["canary"]["steps"] if "analysis" in s]
    assert analyses
    for analysis in analyses:
        assert [t["templateName"] for t in analysis["templates"]] == [template["metadata"]["name"]]
        assert {a["name"] for a in analysis["args"]} == declared


def test_the_template_url_is_served_and_its_json_path_reads_the_verdict(world, clock, make_judge) -> None:
    template, rollout = _argo_documents()
    (metric,) = template["spec"]["metrics"]
    first = next(s["analysis"] for s in rollout["spec"]["strategy"]["canary"]["steps"] if "analysis" in s)
    # What Argo resolves the valueFrom arguments to for this Rollout.
    resolved = {"namespace": rollout["metadata"]["namespace"], "rollout": rollout["metadata"]["name"]}
    resolved["revision"] = "6b8f9c7d5"  # podTemplateHashValue: Latest
    args = {a["name"]: a.get("value", resolved.get(a["name"])) for a in first["args"]}
    args["weight"] = "50"  # the test world splits 50/50
    url = urlsplit(_render(metric["provider"]["web"]["url"], args))
    assert set(dict(parse_qsl(url.query))) <= set(METADATA_KEYS)
    headers = {h["key"]: h["value"] for h in metric["provider"]["web"].get("headers", [])}
    world.add_day(args["promotion"], 0, lift=1.0)
    clock.days = 1
    _, app = make_judge()
    with TestClient(app) as client:
        response = client.get(f"{url.path}?{url.query}", headers={**ARGO_HEADERS, **headers})
    assert response.status_code == 200, response.text
    field = re.fullmatch(r"\{\$\.(\w+)\}", metric["provider"]["web"]["jsonPath"]).group(1)
    result = response.json()[field]
    assert result in {v.value for v in JudgeVerdict}
    assert argo_phase(result, metric["successCondition"], metric["failureCondition"]) in {
        "Successful",
        "Failed",
        "Inconclusive",
    }


def test_canary_webhooks_call_the_judge_routes(world, clock, make_judge) -> None:
    canary = yaml.safe_load(FLAGGER.read_text())
    assert canary["kind"] == "Canary" and canary["apiVersion"].startswith("flagger.app/")
    hooks = {h["type"]: h for h in canary["spec"]["analysis"]["webhooks"]}
    assert set(hooks) == {hook.value for hook in FLAGGER_ROUTES}
    world.add_day(hooks["rollback"]["metadata"]["promotion"], 0, lift=1.0)
    clock.days = 1
    _, app = make_judge()
    with TestClient(app) as client:
        for hook, path in FLAGGER_ROUTES.items():
            spec = hooks[hook.value]
            assert urlsplit(spec["url"]).path == path
            assert set(spec["metadata"]) <= set(METADATA_KEYS)
            payload = {
                "name": canary["metadata"]["name"],
                "namespace": canary["metadata"]["namespace"],
                "phase": "Progressing",
                "checksum": "77c9d8f6b",
                "metadata": spec["metadata"],
            }
            response = client.post(path, json=payload, headers=FLAGGER_HEADERS)
            assert response.status_code in (200, 403), response.text  # judged, not a routing error
            assert response.json()["hook"] == hook.value
