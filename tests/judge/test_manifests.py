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


# Argo's measurement phase for each answer: ERROR is a 503, which the web provider marks Error before any
# condition is evaluated (metricproviders/webmetric/webmetric.go).
def measurement_phase(verdict: str, metric: dict) -> str:
    if verdict == JudgeVerdict.ERROR:
        return "Error"
    return argo_phase(verdict, metric["successCondition"], metric["failureCondition"])


def metric_phase(metric: dict, verdicts: list[str]) -> str:
    """Argo's assessMetricStatus (analysis/analysis.go) over a metric's measurements in order: Failed past
    failureLimit, Inconclusive past inconclusiveLimit, Error past consecutiveErrorLimit consecutive
    errors, else Successful once ``count`` measurements were taken, whatever they were."""
    failed = inconclusive = consecutive_errors = 0
    for taken, verdict in enumerate(verdicts, start=1):
        phase = measurement_phase(verdict, metric)
        failed += phase == "Failed"
        inconclusive += phase == "Inconclusive"
        consecutive_errors = consecutive_errors + 1 if phase == "Error" else 0
        if failed > metric["failureLimit"]:
            return "Failed"
        if inconclusive > metric["inconclusiveLimit"]:
            return "Inconclusive"
        if consecutive_errors > metric["consecutiveErrorLimit"]:
            return "Error"
        if taken >= metric["count"]:
            return "Successful"
    return "Running"


#: analysisutil.IsWorse: the run is the worst of its metrics.
WORST = ["Successful", "Inconclusive", "Error", "Failed"]


def run_phase(template: dict, monitor: list[str], final: str) -> str:
    monitor_metric, verdict_metric = template["spec"]["metrics"]
    phases = [metric_phase(monitor_metric, monitor), metric_phase(verdict_metric, [final])]
    return max(phases, key=WORST.index)


def test_analysis_template_conditions_keep_inconclusive_and_error_apart() -> None:
    template, _ = _argo_documents()
    for metric in template["spec"]["metrics"]:
        success, failure = metric["successCondition"], metric["failureCondition"]
        assert _condition(success) == JudgeVerdict.PASS and _condition(failure) == JudgeVerdict.FAIL
        assert argo_phase("PASS", success, failure) == "Successful"
        assert argo_phase("FAIL", success, failure) == "Failed"
        assert argo_phase("INCONCLUSIVE", success, failure) == "Inconclusive"  # neither condition true
        for limit in ("inconclusiveLimit", "consecutiveErrorLimit", "failureLimit"):
            assert isinstance(metric[limit], int), f"{metric['name']}: {limit} must be explicit"
        assert metric["provider"]["web"]["jsonPath"] == "{$.verdict}"
    # ERROR never reaches the conditions: it is a 5xx, which the web provider records as an Error.
    assert status_for(Hook.ARGO, JudgeVerdict.ERROR, Decision.CONTINUE) >= 500
    monitor, verdict = template["spec"]["metrics"]
    # The same judge and rollout; the verdict metric's look is read at the step's deadline.
    assert verdict["provider"]["web"]["url"] == monitor["provider"]["web"]["url"] + "&deadline=true"
    assert {k: v for k, v in verdict["provider"]["web"].items() if k != "url"} == {
        k: v for k, v in monitor["provider"]["web"].items() if k != "url"
    }
    # The verdict metric's single look comes when the monitor's last one does.
    minutes = {"m": 1, "h": 60}
    delay = int(verdict["initialDelay"][:-1]) * minutes[verdict["initialDelay"][-1]]
    span = int(monitor["initialDelay"][:-1]) + monitor["count"] * int(monitor["interval"][:-1])
    assert delay == span and verdict["count"] == 1


def test_argo_promotes_only_when_the_judge_said_pass() -> None:
    """Every sequence of answers, through Argo's assessment of the template: Successful needs the final
    look's PASS and no FAIL; an INCONCLUSIVE end pauses, an ERROR end aborts."""
    import random

    template, _ = _argo_documents()
    count = template["spec"]["metrics"][0]["count"]
    inconclusive_then_errors = ["INCONCLUSIVE"] * (count - 2) + ["ERROR", "INCONCLUSIVE"]
    assert run_phase(template, inconclusive_then_errors, "INCONCLUSIVE") == "Inconclusive"
    assert run_phase(template, inconclusive_then_errors, "ERROR") == "Error"
    assert run_phase(template, inconclusive_then_errors, "PASS") == "Successful"
    assert run_phase(template, ["INCONCLUSIVE", "FAIL"], "PASS") == "Failed"
    assert run_phase(template, ["ERROR"] * 3, "PASS") == "Error"  # past consecutiveErrorLimit
    rng = random.Random(7)
    words = [v.value for v in JudgeVerdict]
    for _ in range(3000):
        monitor = [rng.choice(words) for _ in range(count)]
        final = rng.choice(words)
        phase = run_phase(template, monitor, final)
        if phase == "Successful":
            assert final == "PASS" and "FAIL" not in monitor
        if "FAIL" in monitor or final == "FAIL":
            assert phase != "Successful"


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
    metric = template["spec"]["metrics"][0]
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
            # only confirm-promotion comes at the end of the analysis
            assert (spec["metadata"].get("deadline") == "true") == (hook is Hook.CONFIRM_PROMOTION)
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
