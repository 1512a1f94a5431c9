"""template.yaml keeps the reliability rules of DESIGN.md: nested timeouts, redrive, partial batch responses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

TEMPLATE = Path(__file__).parents[2] / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !GetAtt, ...) as plain {tag: value} mappings."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {suffix: value}


_CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r.get("Properties", {}) for name, r in template["Resources"].items() if r["Type"] == kind}


def test_timeouts_nest_and_the_redrive_keeps_messages(template: dict[str, Any]) -> None:
    functions = resources(template, "AWS::Serverless::Function")
    queues = resources(template, "AWS::SQS::Queue")
    default_timeout = template["Globals"]["Function"]["Timeout"]
    sources = [
        (name, fn, event["Properties"])
        for name, fn in functions.items()
        for event in fn.get("Events", {}).values()
        if event["Type"] == "SQS"
    ]
    assert sources, "no SQS event source found"
    for name, fn, source in sources:
        timeout = fn.get("Timeout", default_timeout)
        queue = queues[source["Queue"]["GetAtt"].split(".")[0]]
        lease = int(fn["Environment"]["Variables"]["LEASE_SECONDS"])
        assert timeout < lease <= queue["VisibilityTimeout"], name
        assert queue["VisibilityTimeout"] >= 6 * timeout, name
        assert "ReportBatchItemFailures" in source.get("FunctionResponseTypes", []), name
        redrive = queue["RedrivePolicy"]
        assert redrive["maxReceiveCount"] >= 5
        dlq = queues[redrive["deadLetterTargetArn"]["GetAtt"].split(".")[0]]
        assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]


def test_every_route_but_health_is_behind_the_authorizer(template: dict[str, Any]) -> None:
    api = resources(template, "AWS::Serverless::Api")["Api"]
    assert api["Auth"]["DefaultAuthorizer"] == "ApiKeyAuthorizer"
    open_routes = [
        event["Properties"]["Path"]
        for fn in resources(template, "AWS::Serverless::Function").values()
        for event in fn.get("Events", {}).values()
        if event["Type"] == "Api" and event["Properties"].get("Auth", {}).get("Authorizer") == "NONE"
    ]
    assert open_routes == ["/api/v1/health"]


def test_no_secret_value_in_the_template() -> None:
    text = TEMPLATE.read_text().lower()
    assert "password" not in text
    assert "postgresql://" not in text
