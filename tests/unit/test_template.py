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
    parameters = template["Parameters"]
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
        window = source.get("MaximumBatchingWindowInSeconds", 0)
        if isinstance(window, dict):  # a parameter: its largest value
            window = parameters[window["Ref"]]["MaxValue"]
        # AWS: a message stays hidden while a batch that holds it can still be running (and being retried)
        assert queue["VisibilityTimeout"] >= 6 * timeout + window, name
        if "RedrivePolicy" not in queue:  # the DLQ's own consumer
            continue
        work_sources += 1
        variables = fn["Environment"]["Variables"]
        ai_timeout, margin = float(variables["AI_TIMEOUT_SECONDS"]), float(variables["EXECUTOR_MARGIN_SECONDS"])
        # The whole batch runs at once: its largest size fits the calls one invocation runs side by side, so the
        # batch needs one call's time, and a call started at the very beginning ends (with its finish) in time.
        batch = source["BatchSize"]
        largest_batch = parameters[batch["Ref"]]["MaxValue"] if isinstance(batch, dict) else batch
        assert largest_batch <= int(variables["EXECUTOR_MAX_PARALLEL"]), name
        assert ai_timeout + margin < timeout, name
        # A run's lease is renewed by the heartbeat: one missed beat does not lose it.
        lease, heartbeat = int(variables["LEASE_SECONDS"]), int(variables["HEARTBEAT_SECONDS"])
        assert 2 * heartbeat < lease <= queue["VisibilityTimeout"], name
        redrive = queue["RedrivePolicy"]
        assert redrive["maxReceiveCount"] >= 5
        dlq = queues[redrive["deadLetterTargetArn"]["GetAtt"].split(".")[0]]
        assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    assert work_sources == 1


def test_only_health_discovery_and_the_dashboards_files_are_open(template: dict[str, Any]) -> None:
    api = resources(template, "AWS::Serverless::Api")["Api"]
    assert api["Auth"]["DefaultAuthorizer"] == "ApiKeyAuthorizer"
    open_routes = [
        event["Properties"]["Path"]
        for fn in resources(template, "AWS::Serverless::Function").values()
        for event in fn.get("Events", {}).values()
        if event["Type"] == "Api" and event["Properties"].get("Auth", {}).get("Authorizer") == "NONE"
    ]
    assert set(open_routes) == {"/api/v1/health", "/openapi.json", "/docs", "/", "/assets/{name}"}
    dashboard = template["Resources"]["DashboardFunction"]["Properties"]["Events"]
    assert {e["Properties"]["Path"]: e["Properties"].get("Auth") for e in dashboard.values()} == {
        "/": {"Authorizer": "NONE", "ApiKeyRequired": False},
        "/assets/{name}": {"Authorizer": "NONE", "ApiKeyRequired": False},
        "/api/v1/websocket-tickets": None,  # the tenant's key, like every API route
    }


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
        if event["Type"] == "Api" and event["Properties"]["Path"].startswith(("/api/", "/openapi.json"))
    }
    document = json.loads((TEMPLATE.parent / "docs" / "openapi.json").read_text())
    routed = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert routed == declared  # the dashboard's page and files and Swagger UI are not part of the API's contract


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


def test_a_killed_executors_leases_are_closed_in_time_by_sweeps_that_never_overlap(template: dict[str, Any]) -> None:
    from aitasks.application.maintenance import LEASE_PASS_S
    from aitasks.settings import Settings

    functions = resources(template, "AWS::Serverless::Function")
    sweeper, executor = functions["SweeperFunction"], functions["ExecutorFunction"]
    watch = float(sweeper["Environment"]["Variables"]["SWEEPER_WATCH_SECONDS"])
    every = float(sweeper["Environment"]["Variables"]["SWEEPER_LEASE_INTERVAL_SECONDS"])
    lease = float(executor["Environment"]["Variables"]["LEASE_SECONDS"])
    # one sweep at a time, each over before the next minute's starts, with room for its last pass
    assert sweeper["ReservedConcurrentExecutions"] == 1
    assert watch < 60 and watch + LEASE_PASS_S <= sweeper["Timeout"]
    # the leases are looked at every `every` seconds, across invocations too (the next starts a minute after this one)
    assert 60 - watch <= every
    # a killed executor's runs are closed within lease + every, leaving 10 s of the stated 40 s for the wake-up, the
    # claim and a cold start (tests/chaos: the kill scenario)
    assert lease + every <= 30
    # the variables are settings the sweeper and the executor accept
    for fn in (sweeper, executor):
        variables = {k.lower(): v for k, v in fn["Environment"]["Variables"].items() if isinstance(v, str)}
        Settings.model_validate(variables)


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


def test_each_tier_is_a_usage_plan_on_the_stage_and_the_key_comes_from_the_authorizer(template: dict[str, Any]) -> None:
    from aitasks.adapters.usage_plans import plan_ids_from_outputs
    from aitasks.domain.tenant import Tier

    api = resources(template, "AWS::Serverless::Api")["Api"]
    assert api["ApiKeySourceType"] == "AUTHORIZER"
    assert api["Auth"]["ApiKeyRequired"] is True
    health = template["Resources"]["QueryTasksFunction"]["Properties"]["Events"]["Health"]["Properties"]
    assert health["Auth"] == {"Authorizer": "NONE", "ApiKeyRequired": False}
    plans = resources(template, "AWS::ApiGateway::UsagePlan")
    outputs = {name: o["Value"]["Ref"] for name, o in template["Outputs"].items() if "Ref" in o["Value"]}
    by_tier = plan_ids_from_outputs(outputs)  # the CLI finds each tier's plan by these output names
    assert set(by_tier) == set(Tier) and set(by_tier.values()) == set(plans)
    for tier, name in by_tier.items():
        plan = plans[name]
        assert plan["ApiStages"] == [{"ApiId": {"Ref": "Api"}, "Stage": {"Ref": "Api.Stage"}}]
        limits = {"Ref": f"{tier.value.capitalize()}TierLimits"}
        assert plan["Throttle"] == {"RateLimit": {"Select": [0, limits]}, "BurstLimit": {"Select": [1, limits]}}
        assert plan["Quota"] == {"Limit": {"Select": [2, limits]}, "Period": "DAY"}
        assert len(template["Parameters"][limits["Ref"]]["Default"].split(",")) == 3


def _statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every IAM statement of the stack's roles, managed policies and functions' inline policies, with its owner."""

    def unwrap(item: Any) -> list[dict[str, Any]]:  # !If [cond, statement, NoValue] -> the statement
        if isinstance(item, dict) and "If" in item:
            return [s for s in item["If"][1:] if isinstance(s, dict) and "Effect" in s]
        return [item] if isinstance(item, dict) and "Effect" in item else []

    found: list[tuple[str, dict[str, Any]]] = []
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        documents = [p["PolicyDocument"] for p in props.get("Policies", []) if "PolicyDocument" in p]
        documents += [p for p in props.get("Policies", []) if isinstance(p, dict) and "Statement" in p]
        if "PolicyDocument" in props:
            documents.append(props["PolicyDocument"])
        for document in documents:
            found += [(name, s) for item in document["Statement"] for s in unwrap(item)]
    return found


def test_iam_grants_named_resources_only(template: dict[str, Any]) -> None:
    statements = _statements(template)
    assert len(statements) > 10
    for owner, statement in statements:
        resources_ = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert "*" not in resources_, f"{owner}: {statement}"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any(a.endswith(":*") or a == "*" for a in actions), f"{owner}: {statement}"
        if "iam:PassRole" in actions:
            assert statement["Resource"] == {"GetAtt": "SchedulerRole.Arn"}
            assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}


def test_sqs_consumers_read_only_their_own_queue(template: dict[str, Any]) -> None:
    # SAM's generated role for an SQS event source carries AWSLambdaSQSQueueExecutionRole (every queue): the
    # consumers bring their own roles, and those name their queue.
    functions = resources(template, "AWS::Serverless::Function")
    consumers = {
        name: event["Properties"]["Queue"]
        for name, fn in functions.items()
        for event in fn.get("Events", {}).values()
        if event["Type"] == "SQS"
    }
    assert set(consumers) == {"ExecutorFunction", "DlqHandlerFunction", "NotifierFunction"}
    for name, queue in consumers.items():
        role = functions[name]["Role"]["GetAtt"].removesuffix(".Arn")
        receive = [s for owner, s in _statements(template) if owner == role and "sqs:ReceiveMessage" in s["Action"]]
        assert [s["Resource"] for s in receive] == [queue], name
        managed = template["Resources"][role]["Properties"]["ManagedPolicyArns"]
        assert not any("SQS" in str(arn) for arn in managed), name


def test_live_updates_a_ticketed_websocket_and_a_notifier_on_the_bus(template: dict[str, Any]) -> None:
    api = resources(template, "AWS::ApiGatewayV2::Api")["WebSocketApi"]
    assert api["ProtocolType"] == "WEBSOCKET"
    routes = {r["RouteKey"]: r for r in resources(template, "AWS::ApiGatewayV2::Route").values()}
    assert set(routes) == {"$connect", "$disconnect", "$default"}
    assert routes["$connect"]["AuthorizationType"] == "CUSTOM"
    assert routes["$connect"]["AuthorizerId"] == {"Ref": "WebSocketAuthorizer"}
    authorizer = resources(template, "AWS::ApiGatewayV2::Authorizer")["WebSocketAuthorizer"]
    # The browser's ticket, never its key, travels in the URL (docs/decisions.md).
    assert (authorizer["AuthorizerType"], authorizer["IdentitySource"]) == (
        "REQUEST",
        ["route.request.querystring.ticket"],
    )
    [stage] = resources(template, "AWS::ApiGatewayV2::Stage").values()
    assert stage["AutoDeploy"] is True and stage["StageName"] == "v1"
    # Events reach the notifier through a queue, in batches and with bounded concurrency (a burst of events does
    # not start an invocation, and a database connection, per event).
    notifier = resources(template, "AWS::Serverless::Function")["NotifierFunction"]
    [source] = notifier["Events"].values()
    assert source["Type"] == "SQS" and source["Properties"]["Queue"] == {"GetAtt": "LiveUpdatesQueue.Arn"}
    assert source["Properties"]["BatchSize"] == 10
    assert source["Properties"]["ScalingConfig"]["MaximumConcurrency"] <= 5
    rule = resources(template, "AWS::Events::Rule")["LiveUpdatesRule"]
    assert rule["EventBusName"] == {"Ref": "EventBus"} and rule["EventPattern"] == {"source": ["aitasks"]}
    assert [t["Arn"] for t in rule["Targets"]] == [{"GetAtt": "LiveUpdatesQueue.Arn"}]
    policy = resources(template, "AWS::SQS::QueuePolicy")["LiveUpdatesQueuePolicy"]
    [grant] = policy["PolicyDocument"]["Statement"]
    assert grant["Principal"] == {"Service": "events.amazonaws.com"}
    assert grant["Condition"] == {"ArnEquals": {"aws:SourceArn": {"GetAtt": "LiveUpdatesRule.Arn"}}}
    [push] = [s for owner, s in _statements(template) if s.get("Action") == "execute-api:ManageConnections"]
    assert "${WebSocketApi}/v1/POST/@connections/*" in push["Resource"]["Sub"]
    permissions = resources(template, "AWS::Lambda::Permission")
    assert {p["FunctionName"]["Ref"] for p in permissions.values()} == {
        "WebSocketFunction",
        "WebSocketAuthorizerFunction",
    }


def _reserved(fn: dict[str, Any], parameters: dict[str, Any]) -> int:
    value = fn["ReservedConcurrentExecutions"]
    if isinstance(value, dict):  # !FindInMap [Concurrency, !Ref Parameter, Max]: the parameter's default
        return int(parameters[value["FindInMap"][1]["Ref"]]["Default"])
    return int(value)


def test_the_connection_budget_in_operations_md_is_the_templates(template: dict[str, Any]) -> None:
    import re

    functions = resources(template, "AWS::Serverless::Function")
    parameters = template["Parameters"]
    # every function keeps a connection, so every one is bounded; an SQS-fed one no more than its reservation
    reserved = {name: _reserved(fn, parameters) for name, fn in functions.items()}
    for name, fn in functions.items():
        for event in fn.get("Events", {}).values():
            if event["Type"] == "SQS":
                limit = event["Properties"]["ScalingConfig"]["MaximumConcurrency"]
                limit = _reserved({"ReservedConcurrentExecutions": limit}, parameters)
                assert limit == reserved[name], name
    text = (TEMPLATE.parent / "docs" / "operations.md").read_text()
    section = text[text.index("## Connection budget") : text.index("## What to watch")]
    rows = re.findall(r"^\| `(\w+)` \| (\d+)[^|]*\| (\d+) \| (\d+) \|$", section, re.MULTILINE)
    documented = {name: int(at_once) for name, at_once, _, _ in rows}
    assert documented == reserved
    assert all(int(at_once) * int(each) == int(total) for _, at_once, each, total in rows)
    # an executor environment holds two: its heartbeat renews leases on a connection of its own
    each = {name: 2 if name == "ExecutorFunction" else 1 for name in reserved}
    assert {name: int(n) for name, _, n, _ in rows} == each
    [total] = re.findall(r"^\| \*\*total\*\* \| \| \| \*\*(\d+)\*\* \|$", section, re.MULTILINE)
    assert int(total) == sum(reserved[name] * each[name] for name in reserved)
    # the local stack's PostgreSQL has room for all of it
    from aitasks_cli.local_stack import LOCAL_MAX_CONNECTIONS

    assert int(total) < LOCAL_MAX_CONNECTIONS


def _condition(template: dict[str, Any], node: Any, parameters: dict[str, str]) -> Any:
    """A condition of the template evaluated for these parameter values (Or, And, Not, Equals, Condition, Ref)."""
    if not isinstance(node, dict):
        return node
    ((kind, value),) = node.items()
    if kind == "Ref":
        return parameters[value]
    if kind == "Condition":
        return _condition(template, template["Conditions"][value], parameters)
    args = [_condition(template, v, parameters) for v in value]
    functions = {"Or": any, "And": all, "Not": lambda a: not a[0], "Equals": lambda a: a[0] == a[1]}
    return functions[kind](args)


def test_statements_are_prepared_except_behind_the_stacks_rds_proxy(template: dict[str, Any]) -> None:
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["DATABASE_PREPARED_STATEMENTS"] == {"If": ["PrepareStatements", "true", "false"]}
    condition = template["Conditions"]["PrepareStatements"]
    expected = {
        ("auto", "existing"): True,
        ("auto", "aurora"): False,
        ("on", "aurora"): True,
        ("off", "existing"): False,
    }
    for (choice, mode), prepared in expected.items():
        params = {"DatabasePreparedStatements": choice, "DatabaseMode": mode}
        assert _condition(template, condition, params) is prepared, (choice, mode)
