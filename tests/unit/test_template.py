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
    work_sources = 0
    for name, fn, source in sources:
        timeout = fn.get("Timeout", default_timeout)
        queue = queues[source["Queue"]["GetAtt"].split(".")[0]]
        assert "ReportBatchItemFailures" in source.get("FunctionResponseTypes", []), name
        assert queue["VisibilityTimeout"] >= 6 * timeout, name
        if "RedrivePolicy" not in queue:  # the DLQ's own consumer
            continue
        work_sources += 1
        variables = fn["Environment"]["Variables"]
        lease, ai_timeout = int(variables["LEASE_SECONDS"]), float(variables["AI_TIMEOUT_SECONDS"])
        assert ai_timeout < timeout < lease <= queue["VisibilityTimeout"], name
        assert 2 * int(variables["HEARTBEAT_SECONDS"]) < lease, name  # one missed beat does not lose the lease
        redrive = queue["RedrivePolicy"]
        assert redrive["maxReceiveCount"] >= 5
        dlq = queues[redrive["deadLetterTargetArn"]["GetAtt"].split(".")[0]]
        assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    assert work_sources == 1


def test_every_route_but_health_is_behind_the_authorizer(template: dict[str, Any]) -> None:
    api = resources(template, "AWS::Serverless::Api")["Api"]
    assert api["Auth"]["DefaultAuthorizer"] == "ApiKeyAuthorizer"
    open_routes = [
        event["Properties"]["Path"]
        for fn in resources(template, "AWS::Serverless::Function").values()
        for event in fn.get("Events", {}).values()
        if event["Type"] == "Api" and event["Properties"].get("Auth", {}).get("Authorizer") == "NONE"
    ]
    assert set(open_routes) == {"/api/v1/health"}


def test_no_secret_value_in_the_template() -> None:
    import re

    text = TEMPLATE.read_text().lower()
    # ManageMasterUserPassword asks RDS to make and keep the password; nothing may carry one.
    assert not re.search(r"(?<!managemasteruser)password\w*\s*:", text)
    assert "postgresql://" not in text
    assert "noecho" not in text  # no secret comes in as a parameter either


def test_api_gateways_own_answers_are_problems(template: dict[str, Any]) -> None:
    import json

    responses = resources(template, "AWS::Serverless::Api")["Api"]["GatewayResponses"]
    expected = {
        "UNAUTHORIZED": 401,
        "ACCESS_DENIED": 401,
        "MISSING_AUTHENTICATION_TOKEN": 404,
        "THROTTLED": 429,
        "REQUEST_TOO_LARGE": 413,
        "UNSUPPORTED_MEDIA_TYPE": 415,
        "AUTHORIZER_FAILURE": 503,
        "DEFAULT_4XX": 400,
        "DEFAULT_5XX": 500,
    }
    for name, status in expected.items():
        assert responses[name]["StatusCode"] == status, name
    for name, response in responses.items():
        assert response["ResponseParameters"]["Headers"]["Content-Type"] == "'application/problem+json'", name
        body = json.loads(response["ResponseTemplates"]["application/json"])
        assert body["status"] == response["StatusCode"], name
        assert body["type"].startswith("https://aitasks.dev/problems/"), name
        assert (body["instance"], body["traceId"]) == ("$context.path", "$context.requestId"), name
        assert {"title", "detail"} <= body.keys()


def test_every_route_of_the_handlers_is_in_the_template(template: dict[str, Any]) -> None:
    import json

    declared = {
        (event["Properties"]["Method"].lower(), event["Properties"]["Path"].replace("{id}", "{task_id}"))
        for fn in resources(template, "AWS::Serverless::Function").values()
        for event in fn.get("Events", {}).values()
        if event["Type"] == "Api" and event["Properties"]["Path"] != "/{proxy+}"
    }
    document = json.loads((TEMPLATE.parent / "docs" / "openapi.json").read_text())
    routed = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert routed == declared


def test_a_webhook_gets_an_api_destination_a_connection_from_a_secret_and_a_dlq(template: dict[str, Any]) -> None:
    webhook = {name: r for name, r in template["Resources"].items() if name.startswith("Webhook")}
    assert {r["Type"] for r in webhook.values()} >= {
        "AWS::Events::Connection",
        "AWS::Events::ApiDestination",
        "AWS::Events::Rule",
        "AWS::SQS::Queue",
    }
    assert all(r.get("Condition") == "HasWebhook" for r in webhook.values())
    key = webhook["WebhookConnection"]["Properties"]["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"]
    assert "resolve:secretsmanager" in str(key)
    [target] = webhook["WebhookRule"]["Properties"]["Targets"]
    assert target["DeadLetterConfig"]["Arn"] == {"GetAtt": "WebhookDeadLetterQueue.Arn"}


def test_the_relay_and_the_sweeper_run_every_minute(template: dict[str, Any]) -> None:
    functions = resources(template, "AWS::Serverless::Function")
    for name in ("OutboxRelayFunction", "SweeperFunction"):
        [event] = functions[name]["Events"].values()
        assert (event["Type"], event["Properties"]["Schedule"]) == ("Schedule", "rate(1 minute)")


def test_every_function_has_a_log_group_with_retention(template: dict[str, Any]) -> None:
    functions = set(resources(template, "AWS::Serverless::Function"))
    groups = resources(template, "AWS::Logs::LogGroup").values()
    named = {g["LogGroupName"]["Sub"].removeprefix("/aws/lambda/${").removesuffix("}") for g in groups}
    assert named == functions
    assert all(g["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups)


def test_alarms_watch_the_dlq_the_executor_the_api_the_queue_and_the_relay(template: dict[str, Any]) -> None:
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    watched = {(a["Namespace"], a["MetricName"]) for a in alarms.values()}
    assert watched == {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/Lambda", "Errors"),
        ("AWS/ApiGateway", "5XXError"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("aitasks", "OutboxBacklog"),
    }
    assert resources(template, "AWS::CloudWatch::Dashboard")


def test_the_executor_and_the_api_are_bounded(template: dict[str, Any]) -> None:
    executor = resources(template, "AWS::Serverless::Function")["ExecutorFunction"]
    chosen = {"FindInMap": ["Concurrency", {"Ref": "ExecutorReservedConcurrency"}, "Max"]}
    assert executor["ReservedConcurrentExecutions"] == chosen
    source = executor["Events"]["Work"]["Properties"]
    assert source["ScalingConfig"]["MaximumConcurrency"] == chosen
    allowed = template["Parameters"]["ExecutorReservedConcurrency"]["AllowedValues"]
    assert {template["Mappings"]["Concurrency"][v]["Max"] for v in allowed} == {int(v) for v in allowed}
    assert min(int(v) for v in allowed) >= 2  # SQS's minimum MaximumConcurrency
    [throttle] = resources(template, "AWS::Serverless::Api")["Api"]["MethodSettings"]
    assert throttle["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRateLimit"}


def test_a_created_database_is_encrypted_private_backed_up_and_behind_a_tls_proxy(template: dict[str, Any]) -> None:
    cluster = template["Resources"]["DatabaseCluster"]
    props = cluster["Properties"]
    assert cluster["Condition"] == "CreateDatabase" and cluster["DeletionPolicy"] == "Snapshot"
    assert (props["StorageEncrypted"], props["DeletionProtection"], props["ManageMasterUserPassword"]) == (
        True,
        True,
        True,
    )
    assert props["BackupRetentionPeriod"] >= 7
    assert "MasterUserPassword" not in props  # RDS keeps the secret
    assert template["Resources"]["DatabaseInstance"]["Properties"]["PubliclyAccessible"] is False
    proxy = template["Resources"]["DatabaseProxy"]["Properties"]
    assert proxy["RequireTLS"] is True and proxy["Auth"][0]["AuthScheme"] == "SECRETS"
    vpc = template["Globals"]["Function"]["VpcConfig"]
    assert vpc["If"][0] == "CreateDatabase"  # functions join the VPC only when there is one to join
    migration = template["Resources"]["DatabaseMigration"]["Properties"]
    assert migration["SchemaCode"] == {"Ref": "CommonLayer"}


def test_functions_wait_for_the_migration(template: dict[str, Any]) -> None:
    for name, fn in template["Resources"].items():
        if fn["Type"] == "AWS::Serverless::Function" and name != "MigrateFunction":
            assert fn.get("DependsOn") == "DatabaseMigration", name
