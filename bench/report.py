"""docs/benchmarks.md from bench/results.json: a table per scenario, the targets and whether each is met."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Scenario 7's figures on the engine before issue 19 (e4731ad), measured once with the same bench/scarcity.py on
# the same machine: shown beside this run's, never mixed into bench/results.json.
SCARCITY_BEFORE = Path(__file__).with_name("scarcity_before.json")

Target = tuple[str, str, str, bool | None, str]  # scenario, target, measured, met, note


def _lat(row: dict[str, Any]) -> str:
    return f"{row['median_ms']:.1f} | {row['p95_ms']:.1f} | {row['p99_ms']:.1f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _met(ok: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[ok]


def targets(s: dict[str, Any]) -> list[Target]:
    rows: list[Target] = []
    create = s.get("create") or {}
    if "ratio" in create:
        rows.append(
            (
                "1. create",
                "ours >= 50 % of the baseline's throughput",
                f"{create['ratio'] * 100:.0f} %",
                create["ratio"] >= 0.5,
                "",
            )
        )
    execute = s.get("execute") or {}
    if "ratio" in execute:
        rows.append(
            (
                "2. execute",
                ">= 2 x Procrastinate's throughput",
                f"{execute['ratio']:.2f} x",
                execute["ratio"] >= 2,
                "",
            )
        )
        trips = execute["round_trips_per_task"]
        relay = execute.get("round_trips_per_task_with_relay")
        rows.append(
            (
                "2. execute",
                "<= 1.2 database round trips per executed task",
                f"{trips:g}" + (f" ({relay:g} with the inline relay)" if relay is not None else ""),
                trips <= 1.2,
                "",
            )
        )
    latency = s.get("latency") or {}
    if "ratio" in latency:
        rows.append(
            (
                "2b. latency",
                f">= 80 % of the bound ({latency['bound_per_s']:g} tasks/s)",
                f"{latency['ratio'] * 100:.0f} % ({latency['throughput_per_s']:g} tasks/s)",
                latency["ratio"] >= 0.8,
                "",
            )
        )
        rows.append(
            (
                "2b. latency",
                "<= 0.3 executor-seconds per task",
                f"{latency['executor_s_per_task']:g} s (serially: {latency['serial_executor_s_per_task']:g} s)",
                latency["executor_s_per_task"] <= 0.3,
                "",
            )
        )
    query = s.get("query") or {}
    if "reads" in query:
        worst = max(query["reads"].items(), key=lambda kv: kv[1]["ours"]["p95_ms"])
        seq = [name for name, r in query["reads"].items() if r["seq_scan_on_tasks"]]
        rows.append(
            (
                "3. query",
                "p95 <= 20 ms for every read (with X-Total-Count)",
                f"worst p95 {worst[1]['ours']['p95_ms']:.1f} ms ({worst[0]})",
                worst[1]["ours"]["p95_ms"] <= 20,
                "",
            )
        )
        rows.append(("3. query", "no sequential scan of tasks", "none" if not seq else ", ".join(seq), not seq, ""))
    cold = s.get("cold_start") or {}
    for name, f in (cold.get("functions") or {}).items():
        if "target" in f:
            rows.append(
                (
                    "4. cold start",
                    f"{name} <= {f['target']:g} x floor",
                    f"{f['ratio']:.2f} x ({f['median_ms']:.0f} ms)",
                    f["ratio"] <= f["target"],
                    "",
                )
            )
    rows.extend(scarcity_targets(s.get("scarcity") or {}))
    return rows


def _usd(value: str | float | None) -> str:
    """Dollars as stored (numeric(16, 8)), without the trailing zeros: $0.295."""
    if value is None:
        return "-"
    text = f"{float(value):.8f}".rstrip("0")
    return "$" + (text + "00" if text.endswith(".") else text)


def _pct(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f} %"


def scarcity_targets(r: dict[str, Any]) -> list[Target]:
    """Issue 19's targets: each figure against the scarce thing it shares (a tpm, an rpm, a budget)."""
    if not r or "error" in r:
        return []
    rows: list[Target] = []
    name = "7. scarcity"
    tpm = r.get("tpm") or {}
    if tpm.get("utilisation") is not None:
        used, rejected = tpm["utilisation"], tpm.get("calls_429_fraction") or 0.0
        measured = f"{_pct(used)} ({tpm['tokens_per_minute']:,} of {tpm['tpm']:,} tokens/min)"
        rows.append((name, ">= 90 % of a tpm limit really used (steady state)", measured, used >= 0.9, ""))
        calls = f"{_pct(rejected, 1)} ({tpm['calls_429']} of {tpm['calls']} calls)"
        rows.append((name, "<= 1 % of the calls answered 429", calls, rejected <= 0.01, ""))
    fair = r.get("fairness") or {}
    if fair.get("jain") is not None:
        measured = f"{fair['jain']:.3f} ({fair['period_starts']} starts)"
        rows.append(
            (
                name,
                f"Jain's index >= 0.95, {fair['tenants']} tenants on an rpm limit",
                measured,
                fair["jain"] >= 0.95,
                "",
            )
        )
    weights = r.get("weights") or {}
    if weights.get("skipped"):
        rows.append((name, "weights 2:1 give 2:1 within 10 %", "not supported by this code", None, ""))
    elif weights.get("ratio") is not None:
        ok = abs(weights["ratio"] / 2 - 1) <= 0.10
        rows.append((name, "weights 2:1 give 2:1 within 10 %", f"{weights['ratio']:.2f} : 1", ok, ""))
    late = r.get("late") or {}
    if "started" in late:
        slot = late["slot_s"]
        if late["started"]:
            measured = f"{late['wait_s']:g} s ({late['others_before']} others' starts first)"
        else:
            measured = f"not within {late['max_wait_s']} s ({late['others_before']} others' starts meanwhile)"
        ok = bool(late["started"]) and late["others_before"] <= 1
        rows.append(
            (
                name,
                f"a late tenant's first task starts within one slot ({slot:g} s at rpm {late['rpm']})",
                measured,
                ok,
                "",
            )
        )
    budget = r.get("budget") or {}
    if budget.get("utilisation") is not None:
        used = budget["utilisation"]
        rows.append(
            (name, ">= 95 % of a budget spent before work waits for the month", _pct(used, 1), used >= 0.95, "")
        )
        peak = budget["max_spent_fraction"]
        rows.append((name, "spend never exceeds the budget", f"at most {_pct(peak, 1)}", peak <= 1.0, ""))
    claim = r.get("claim") or {}
    if claim.get("p95_ms") is not None:
        scale = f"{claim['tenants']:,} tenants x {claim['due_per_tenant']} paused, {claim['budget_tasks']:,} held back"
        measured = f"{claim['p95_ms']:,.1f} ms"
        if claim.get("failed"):
            measured += (
                f" ({claim['failed']} of {claim['claims'] + claim['warmup']} failed: {', '.join(claim['errors'])})"
            )
        rows.append(
            (name, f"claim p95 <= 10 ms ({scale})", measured, claim["p95_ms"] <= 10 and not claim.get("failed"), "")
        )
    return rows


def scarcity_summary(r: dict[str, Any]) -> str:
    """One line for the console."""
    parts = [
        f"tpm {_pct(r.get('tpm_utilisation'))}",
        f"429 {_pct(r.get('calls_429_fraction'), 1)}",
        f"Jain {_num(r.get('fairness_jain'), 3)}",
        f"weights {_num(r.get('weights_ratio'))}",
        f"late {_num(r.get('late_wait_slots'))} slots",
        f"budget {_pct(r.get('budget_utilisation'), 1)}",
        f"claim p95 {_num(r.get('claim_p95_ms'), 1)} ms",
    ]
    errors = r.get("errors") or {}
    return ", ".join(parts) + (f"; errors in {', '.join(errors)}" if errors else "")


def _why(s: dict[str, Any]) -> list[str]:
    """For each target this run missed: by how much, and why, from the run's own numbers."""
    notes = []
    execute = s.get("execute") or {}
    if "ratio" in execute and execute["ratio"] < 2:
        ours, peer = execute["ours"].get("cpu") or {}, execute["baseline"].get("cpu") or {}
        cpu = ""
        if ours.get("db_ms_per_task") is not None and peer.get("db_ms_per_task") is not None:
            ours_ms = ours["python_ms_per_task"] + ours["db_ms_per_task"]
            peer_ms = peer["python_ms_per_task"] + peer["db_ms_per_task"]
            cpu = (
                f" Per executed task the executor used {ours_ms:.2f} ms of CPU ({ours['python_ms_per_task']:.2f} in "
                f"Python, {ours['db_ms_per_task']:.2f} in PostgreSQL) against {peer_ms:.2f} ms per Procrastinate "
                f"no-op job ({peer['python_ms_per_task']:.2f} + {peer['db_ms_per_task']:.2f}): ours is faster only "
                f"because its {execute['concurrency']} environments are processes that keep both cores busy "
                f"({ours['machine_busy_pct']:.0f} % of the machine) while the peer's single process leaves room "
                f"({peer['machine_busy_pct']:.0f} %). On 2 cores, 2 x needs a task to cost about half the CPU of a "
                f"no-op job."
            )
        notes.append(
            f"**2. execute is {(2 - execute['ratio']) / 2 * 100:.0f} % short of 2 x** ({execute['ratio']:.2f} x)."
            + cpu
            + " A task does more than a no-op job: its claim writes the task, an attempt and an event, its finish "
            "the task, the attempt, an artifact and an event, and the handler logs and measures every run."
        )
    if execute.get("round_trips_per_task", 0) > 1.2:
        notes.append(
            f"**2. execute makes {execute['round_trips_per_task']:g} round trips per task**: runs end one by one "
            "instead of in batches when the model answers at different times."
        )
    latency = s.get("latency") or {}
    if "ratio" in latency and (latency["ratio"] < 0.8 or latency["executor_s_per_task"] > 0.3):
        notes.append(
            f"**2b. latency**: {latency['ratio'] * 100:.0f} % of the bound, {latency['executor_s_per_task']:g} "
            "executor-seconds per task; the rounds' times are in its section."
        )
    create = s.get("create") or {}
    if "ratio" in create and create["ratio"] < 0.5:
        notes.append(
            f"**1. create is {(0.5 - create['ratio']) * 100:.0f} points short** ({create['ratio'] * 100:.0f} %): "
            "see the profile in its section."
        )
    query = s.get("query") or {}
    for name, read in (query.get("reads") or {}).items():
        if read["ours"]["p95_ms"] > 20 or read["seq_scan_on_tasks"]:
            notes.append(
                f"**3. query, {name}**: p95 {read['ours']['p95_ms']:.1f} ms"
                + (", with a sequential scan of tasks" if read["seq_scan_on_tasks"] else "")
                + f" (the plain SQL: {read['baseline']['p95_ms']:.1f} ms); its plan is in its section."
            )
    notes.extend(_scarcity_why(s.get("scarcity") or {}))
    for name, f in ((s.get("cold_start") or {}).get("functions") or {}).items():
        if "target" in f and f["ratio"] > f["target"]:
            notes.append(
                f"**4. cold start, {name}**: {f['ratio']:.2f} x the floor, {(f['ratio'] - f['target']) * 100:.0f} "
                f"points over {f['target']:g} x; its import alone takes {f['import_median_ms']:.0f} ms (Powertools' "
                f"resolver with validation and the pydantic models, which the floor does not load)."
            )
    return notes


def render(results: dict[str, Any]) -> str:
    meta, s = results["meta"], results["scenarios"]
    out: list[str] = []
    add = out.append
    add("# Benchmarks\n")
    add(
        "Generated by `make bench` (`python -m bench`, code in `bench/`) from the run described below; not edited "
        "by hand. The raw numbers are in `bench/results.json`. Each scenario measures ours and its baseline in the "
        "same run, on the same PostgreSQL, alternating in ABBA order over several rounds; a ratio compares the two "
        "medians of that run.\n"
    )
    add("| | |\n|---|---|")
    add(f"| date (UTC) | {meta['date']} |")
    add(f"| commit | {meta['commit']} |")
    add(f"| machine | {meta['cores']} cores ({meta['cpu']}), {meta['memory_gib']} GiB memory, {meta['os']} |")
    add(f"| Python | {meta['python']} |")
    add(f"| PostgreSQL | {meta['postgres']} |")
    add(f"| packages | {', '.join(f'{k} {v}' for k, v in meta['packages'].items())} |")
    add(f"| mode | {meta['mode']}; the whole run took {meta.get('seconds', '?')} s |")
    add(f"| load | load average {meta.get('load', '?')} at the start (the machine is shared) |")
    if meta.get("note"):
        add(f"| runs | {meta['note']} |")
    add("")

    add("## Targets\n")
    add("| scenario | target | measured | |\n|---|---|---|---|")
    for scenario, target, measured, ok, _ in targets(s):
        add(f"| {scenario} | {target} | {measured} | {_met(ok)} |")
    add("")
    for note in _why(s):
        add(f"- {note}")
    add("")

    _create(add, s.get("create"))
    _execute(add, s.get("execute"))
    _latency(add, s.get("latency"))
    _query(add, s.get("query"))
    _cold(add, s.get("cold_start"))
    _e2e(add, s.get("end_to_end"))
    _memory(add, s.get("memory"), s.get("execute"))
    _scarcity(add, s.get("scarcity"))
    add("## Running it\n")
    add(
        "`make bench` installs the `bench` extra and the local tools, then runs every scenario (about fifteen minutes "
        "on this 2-core machine) and rewrites this page and `bench/results.json`. `DATABASE_URL` points it at a "
        "server of yours (it makes and drops its own databases there); unset, it starts an embedded PostgreSQL. "
        "`.venv/bin/python -m bench --only create,query` runs some scenarios, `--quick` runs each with tiny sizes "
        "(what the integration test does), `--render` rewrites this page from `bench/results.json`.\n"
    )
    return "\n".join(out)


def _skipped(add: Any, title: str, r: dict[str, Any] | None) -> bool:
    add(f"## {title}\n")
    if not r:
        add("Not run.\n")
        return True
    if "error" in r or "skipped" in r:
        add(f"Not measured: {r.get('error') or r.get('skipped')}\n")
        return True
    if "machine_busy_cores" in r:
        add(
            f"_{r['seconds']:.0f} s; the machine's cores were busy {r['machine_busy_cores']:.1f} on average meanwhile "
            f"(this scenario's work and anyone else's: the machine is shared)._\n"
        )
    return False


def _create(add: Any, r: dict[str, Any] | None) -> None:
    if _skipped(add, "1. Create", r):
        return
    assert r is not None
    add(
        f"The create_task handler invoked in-process with real REST events (body validation, an Idempotency-Key, "
        f"the task and its outbox rows, the SQS wake-up to a moto server in its own process), one request after "
        f"another, {r['rounds']} rounds of {r['per_round']} requests a side. The baseline writes the same rows "
        f"(idempotency record, task, two outbox rows, the record completed) with plain psycopg in one transaction "
        f"on one connection, then makes the same boto3 send to the same moto server.\n"
    )
    add("| | tasks/s | latency median (ms) | p95 | p99 | round trips / request |\n|---|---|---|---|---|---|")
    for key in ("ours", "baseline"):
        side = r[key]
        add(
            f"| {side['name']} | {side['throughput']['median_per_s']:.1f} | {_lat(side['latency'])} | "
            f"{side['round_trips_per_request']:g} |"
        )
    add(f"\nRatio (ours / baseline throughput): **{r['ratio']:.2f}**.\n")
    prof = r["profile"]
    add(
        f"Where a request's time goes (pyinstrument over {prof['requests']} requests, {prof['per_request_ms']:.1f} "
        f"ms each while profiled; each frame's own time by the part of the stack it belongs to, time inside an SQS "
        f"call or a statement counted there):\n"
    )
    add("| part | ms / request | share |\n|---|---|---|")
    total = sum(prof["parts_ms"].values()) or 1
    for part, ms in prof["parts_ms"].items():
        add(f"| {part} | {ms:.2f} | {ms / total * 100:.0f} % |")
    add("\n<details><summary>The call tree</summary>\n\n```")
    add("\n".join(line for line in prof["tree"].splitlines() if line.strip() and not line.startswith("Profile at")))
    add("```\n</details>\n")


def _execute(add: Any, r: dict[str, Any] | None) -> None:
    if _skipped(add, "2. Execute", r):
        return
    assert r is not None
    add(
        f"{r['n']} queued tasks drained through the executor handler (fake provider at zero latency: one statement "
        f"claims the best due tasks for the batch with their attempt rows and task.started events, the model calls "
        f"run at once, then one fenced statement ends the runs that are back: statuses, attempts, artifacts and "
        f"events; the invocation claims again for the slots they freed) by {r['concurrency']} warm executor "
        f"environments, each its own process with its own connection (as Lambda runs them), fed SQS batches of "
        f"{r['batch_size']} wake-ups; {r['rounds']} rounds, each "
        f"side starting every round on empty tables (Procrastinate's worker slows down as finished jobs pile up). The "
        f"peer: one Procrastinate worker with concurrency {r['concurrency']} (async no-op job, a pool of "
        f"{r['concurrency'] + 1} connections) draining the same number of jobs on the same database.\n"
    )
    add(
        "| | tasks/s (median) | each round | Python CPU ms / task | database CPU ms / task | machine busy |\n"
        "|---|---|---|---|---|---|"
    )
    for key in ("ours", "baseline"):
        t, cpu = r[key]["throughput"], r[key].get("cpu") or {}
        rounds = ", ".join(f"{x:.0f}" for x in t["rounds_per_s"])
        add(
            f"| {r[key]['name']} | {t['median_per_s']:.1f} | {rounds} | {_num(cpu.get('python_ms_per_task'))} | "
            f"{_num(cpu.get('db_ms_per_task'))} | {_num(cpu.get('machine_busy_pct'), 0)} % |"
        )
    add(
        f"\nRatio (ours / Procrastinate): **{r['ratio']:.2f}**. CPU per task: the Python processes' own CPU time "
        f"and their database backends' (read from /proc, so only when the server runs on this machine), medians of "
        f"the rounds; machine busy is the whole machine's CPU use during the drain, other work included.\n"
    )
    relay = r.get("round_trips_per_task_with_relay")
    add(
        f"Database round trips per executed task, counted from libpq's protocol trace (every statement, BEGIN or "
        f"COMMIT ends with the server's ReadyForQuery): **{r['round_trips_per_task']:g}** (claims and finishes, "
        f"each for a batch of runs)"
        + (
            f"; **{relay:g}** with EVENT_BUS_NAME set as deployed, where the inline relay publishes each "
            f"batch's events after it (BEGIN, claim, mark, COMMIT per batch of up to 20 events)."
            if relay is not None
            else "."
        )
        + "\n"
    )


def _latency(add: Any, r: dict[str, Any] | None) -> None:
    if _skipped(add, "2b. Latency (slow model calls)", r):
        return
    assert r is not None
    add(
        f"{r['n']} due tasks whose model takes {r['latency_ms'] / 1000:g} s each (the fake provider's scripted "
        f"latency), drained by {r['concurrency']} warm executor environments fed SQS batches of {r['batch_size']} "
        f"wake-ups, as a backlog reaches them. The bound: {r['concurrency']} environments x {r['batch_size']} calls "
        f"at a time / {r['latency_ms'] / 1000:g} s = {r['bound_per_s']:g} tasks/s (with whole waves of "
        f"{r['concurrency'] * r['batch_size']} calls, {r['n']} tasks need at least "
        f"{-(-r['n'] // (r['concurrency'] * r['batch_size'])) * r['latency_ms'] / 1000:g} s). Executor-seconds: the "
        f"environments' time inside the handler, what Lambda bills; a serial executor spends the whole latency on "
        f"each task.\n"
    )
    add("| round | seconds | tasks/s | executor-seconds | per task |\n|---|---|---|---|---|")
    for i, row in enumerate(r["rounds"], 1):
        add(
            f"| {i} | {row['seconds']:.2f} | {r['n'] / row['seconds']:.1f} | {row['busy_s']:.1f} | "
            f"{row['busy_s'] / r['n']:.3f} |"
        )
    add(
        f"\nMedian: **{r['throughput_per_s']:g} tasks/s, {r['ratio'] * 100:.0f} % of the bound**; "
        f"**{r['executor_s_per_task']:g} executor-seconds per task** against {r['serial_executor_s_per_task']:g} s "
        f"serially.\n"
    )


def _query(add: Any, r: dict[str, Any] | None) -> None:
    if _skipped(add, "3. Query", r):
        return
    assert r is not None
    add(
        f"The query_tasks handler (in-process, real REST events) on {r['tasks']:,} tasks across {r['tenants']} "
        f"tenants (filled and VACUUM ANALYZEd in {r['fill_seconds']} s; a tenant's tasks are interleaved with the "
        f"others' on disk, as they arrive), random tenants and tasks, against the same SQL sent by plain psycopg. "
        f"Every list request also counts the matches (X-Total-Count).\n"
    )
    add(
        "| read | ours median (ms) | p95 | p99 | baseline median | p95 | p99 | p95 ratio |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for name, read in r["reads"].items():
        add(f"| {name} | {_lat(read['ours'])} | {_lat(read['baseline'])} | {read['ratio_p95']:.2f} |")
    add("\nThe plans (EXPLAIN (ANALYZE, BUFFERS) of each statement, one random tenant):\n")
    for name, read in r["reads"].items():
        add(f"<details><summary>{name}</summary>\n\n```\n{read['plan']}\n```\n</details>\n")


def _cold(add: Any, r: dict[str, Any] | None) -> None:
    if _skipped(add, "4. Cold start", r):
        return
    assert r is not None
    floor = r["floor"]
    add(
        f"Each function module imported in a fresh interpreter, then what its first request builds (the database "
        f"connection, its AWS clients, the executor's provider), timed inside the interpreter; the median of "
        f"{r['repeat']}, the runs of all functions and the floor alternating. The floor: `import boto3, psycopg`, "
        f"one SQS client, one connection: **{floor['median_ms']:.0f} ms**. Tracing is off, as here there is no X-Ray "
        f"daemon; with tracing on (the template's default) the X-Ray SDK's import adds {r['xray_sdk_ms']:.0f} ms "
        f"to every function (it builds two botocore clients when it loads).\n"
    )
    add(
        "| function | import + init (ms) | of which import | x floor | target | | CPU (ms) | CPU x floor | "
        "modules loaded | heavy modules |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for name, f in r["functions"].items():
        target = f"<= {f['target']:g}" if "target" in f else "-"
        ok = _met(f["ratio"] <= f["target"]) if "target" in f else ""
        heavy = ", ".join(f["heavy_modules"]) or "-"
        add(
            f"| {name} | {f['median_ms']:.0f} | {f['import_median_ms']:.0f} | {f['ratio']:.2f} | {target} | {ok} | "
            f"{f['cpu_median_ms']:.0f} | {f['cpu_ratio']:.2f} | {f['modules']} | {heavy} |"
        )
    add(
        f"| floor | {floor['median_ms']:.0f} | {floor['import_median_ms']:.0f} | 1 | | | "
        f"{floor['cpu_median_ms']:.0f} | 1 | {floor['modules']} | boto3 |"
    )
    add(
        "\nThe target is judged on the wall time (what a cold start takes); the CPU time beside it is the same runs' "
        "work without any wait for a CPU that a shared machine may add.\n"
    )


def _e2e(add: Any, r: dict[str, Any] | None) -> None:
    if _skipped(add, "5. End to end", r):
        return
    assert r is not None
    add(
        f"The local stack (`aitasks local up --port {r['port']}`: MiniStack, `sam build` and `sam deploy` of "
        f"template.yaml, the fake provider; up in {r['stack_up_seconds']} s) on the bench's PostgreSQL. {r['n']} "
        f"tasks created over HTTP by {r['concurrency']} concurrent clients, after a warm-up burst of as many requests "
        f"(MiniStack starts a worker per concurrent request; their cold starts are scenario 4's subject).\n"
    )
    add("| | |\n|---|---|")
    add(f"| first request until all {r['n']} succeeded | {r['all_succeeded_seconds']} s ({r['tasks_per_s']} tasks/s) |")
    add(f"| create latency median / p95 / p99 (ms) | {_lat(r['create']).replace(' |', ' /')} |")
    add(f"| queued -> succeeded median / p95 / p99 (ms) | {_lat(r['queued_to_succeeded']).replace(' |', ' /')} |\n")
    waits = r["queued_to_succeeded"]
    if waits["p99_ms"] > 10 * waits["median_ms"]:
        add(
            "The long tail is the local stack's SQS poller: MiniStack hands the executor its messages in bursts with "
            "pauses of seconds between them (`.local/ministack.log` shows when each batch was processed), so a "
            "message that lands in a pause waits for the next burst.\n"
        )


def _memory(add: Any, r: dict[str, Any] | None, execute: dict[str, Any] | None) -> None:
    if _skipped(add, "6. Memory", r):
        return
    assert r is not None
    add(
        f"Peak RSS (ru_maxrss) of one API invocation in a fresh interpreter (the worst of {r['runs']}), and of each "
        f"executor environment over scenario 2. The MemorySize memory alone justifies: the peak with "
        f"{r['headroom']:g} x headroom, rounded up to 64 MB.\n"
    )
    add("| function | peak RSS (MB) | MemorySize it justifies (MB) |\n|---|---|---|")
    for name, f in r["functions"].items():
        add(f"| {name} (one invocation) | {f['peak_rss_mb']:.0f} | {f['memory_size_mb']} |")
    if execute and "peak_rss_mb" in execute:
        from bench.memory import memory_size

        peak = execute["peak_rss_mb"]
        add(f"| executor (over scenario 2) | {peak:.0f} | {memory_size(peak)} |")
    add(
        "\nMemory alone would justify these sizes; the template gives every function 512 MB because Lambda allots "
        "CPU in proportion to memory (one vCPU at 1,769 MB: about 0.29 vCPU at 512 MB, 0.07 at 128 MB) and a cold "
        "start is several hundred milliseconds of CPU (scenario 4), which a quarter of the CPU would make about four "
        "times longer. Lower it only after measuring cold starts and p99 latency at the smaller size.\n"
    )


def _scarcity_why(r: dict[str, Any]) -> list[str]:
    """For each scarcity target this run missed: the run's own numbers that say why."""
    notes = []
    tpm = r.get("tpm") or {}
    if tpm.get("utilisation") is not None and tpm["utilisation"] < 0.9:
        counted = (tpm.get("database") or {}).get("tokens_counted_per_call")
        notes.append(
            f"**7. scarcity, tpm**: {_pct(tpm['utilisation'])} of the tpm used; a call counts "
            f"{tpm.get('tokens_per_call') or 0:,} tokens as the provider estimates it"
            + (f", and the claim counted {counted:,} per call" if counted else "")
            + "."
        )
    if (tpm.get("calls_429_fraction") or 0) > 0.01:
        notes.append(
            f"**7. scarcity, 429s**: {tpm['calls_429']} of {tpm['calls']} calls in steady state were answered 429 "
            "(each pauses the model for its Retry-After and fails its attempt)."
        )
    fair = r.get("fairness") or {}
    if fair.get("jain") is not None and fair["jain"] < 0.95:
        pairs = ", ".join(f"{b}: {n}" for b, n in zip(fair["backlogs"], fair["starts"], strict=True))
        notes.append(
            f"**7. scarcity, fairness**: Jain's index {fair['jain']:.3f}; starts per tenant by backlog ({pairs})."
        )
    late = r.get("late") or {}
    if "started" in late and not (late["started"] and late["others_before"] <= 1):
        notes.append(
            f"**7. scarcity, a late tenant**: {late['others_before']} starts of the busy tenants went first"
            + (f"; it started after {late['wait_s']:g} s." if late["started"] else f", for {late['max_wait_s']} s.")
        )
    budget = r.get("budget") or {}
    if budget.get("utilisation") is not None and (budget["utilisation"] < 0.95 or budget["max_spent_fraction"] > 1):
        notes.append(
            f"**7. scarcity, budget**: {_usd(budget['spent_usd'])} of {_usd(budget['budget_usd'])} spent when "
            f"{budget['stop']}, "
            f"{budget['still_waiting']} tasks waiting"
            + (
                f"; a hold (the worst cost) was {1 / budget['real_over_worst']:.1f} x a real cost."
                if budget.get("real_over_worst")
                else "."
            )
        )
    claim = r.get("claim") or {}
    if claim.get("p95_ms") is not None and (claim["p95_ms"] > 10 or claim.get("failed")):
        notes.append(
            f"**7. scarcity, claim**: p95 {claim['p95_ms']:,.1f} ms, median {claim['median_ms']:,.1f} ms"
            + (f"; {claim['failed']} claims failed ({', '.join(claim['errors'])})" if claim.get("failed") else "")
            + "."
        )
    return notes


def _late(r: dict[str, Any]) -> str:
    """How many of the busy tenants' starts came before the late tenant's first (and its wait in slots)."""
    if r.get("late_others_before") is None:
        return "-"
    if not r.get("late_started"):
        return f"{r['late_others_before']}, and it had not started"
    return f"{r['late_others_before']} ({_num(r.get('late_wait_slots'))} slots)"


def _scarcity_before() -> dict[str, Any]:
    try:
        return dict(json.loads(SCARCITY_BEFORE.read_text()))
    except (OSError, ValueError):
        return {}


def _scarcity(add: Any, r: dict[str, Any] | None) -> None:
    if _skipped(add, "7. Scarcity (flow control)", r):
        return
    assert r is not None
    add(
        "Flow control where something is scarce - a provider's tokens per minute, a model's requests per minute, a "
        "tenant's budget, a paused popular model - each figure against the scarce thing itself, measured in the same "
        "run. Each part runs in a fresh interpreter on a database of its own and drives the system only through its "
        "public seams: the handlers, the create use case, the repositories (code in `bench/scarcity.py`).\n"
    )
    before = _scarcity_before()
    then = before.get("figures") or {}
    if before:
        add(
            f"| figure | measured | against | target | before this change ({before['commit']}) |\n|---|---|---|---|---|"
        )
    else:
        add("| figure | measured | against | target |\n|---|---|---|---|")
    rows = [
        ("tpm utilisation", _pct(r.get("tpm_utilisation")), f"tpm {r.get('tpm_limit') or 0:,}", ">= 90 %",
         _pct(then.get("tpm_utilisation"))),
        ("calls answered 429", _pct(r.get("calls_429_fraction"), 1), "the same calls", "<= 1 %",
         _pct(then.get("calls_429_fraction"), 1)),
        ("fairness (Jain)", _num(r.get("fairness_jain"), 3), f"rpm {r.get('rpm_limit') or '-'}", ">= 0.95",
         _num(then.get("fairness_jain"), 3)),
        ("weights 2:1", _num(r.get("weights_ratio")), "2", "1.8 - 2.2", _num(then.get("weights_ratio"))),
        ("late tenant: others' starts first", _late(r), "one slot", "<= 1", _late(then)),
        ("budget utilisation", _pct(r.get("budget_utilisation"), 1), _usd(r.get("budget_usd")), ">= 95 %",
         _pct(then.get("budget_utilisation"), 1)),
        ("budget, most spent", _pct(r.get("budget_max_fraction"), 1), "the same budget", "<= 100 %",
         _pct(then.get("budget_max_fraction"), 1)),
        ("claim p95 (ms)", _num(r.get("claim_p95_ms"), 1), "-", "<= 10", _num(then.get("claim_p95_ms"), 1)),
        ("claim median (ms)", _num(r.get("claim_median_ms"), 1), "-", "", _num(then.get("claim_median_ms"), 1)),
    ]  # fmt: skip
    for row in rows:
        add("| " + " | ".join(row if before else row[:4]) + " |")
    add("")
    if before:
        add(
            f"The last column: the same scenario on the engine before issue 19 ({before['commit']}), measured "
            f"{before.get('date', '')} on this machine (`bench/scarcity_before.json`), not in this run. "
            f"{before.get('note', '')}\n"
        )
    for name, error in (r.get("errors") or {}).items():
        add(f"- {name}: not measured: {error}")
    _scarcity_tpm(add, r.get("tpm") or {})
    _scarcity_fairness(add, r.get("fairness") or {}, r.get("weights") or {}, r.get("late") or {})
    _scarcity_budget(add, r.get("budget") or {})
    _scarcity_claim(add, r.get("claim") or {})


def _scarcity_tpm(add: Any, t: dict[str, Any]) -> None:
    if "utilisation" not in t:
        return
    low, high = t["latency_ms"]
    counted = (t.get("database") or {}).get("tokens_counted_per_call")
    add("### 7a. Tokens per minute\n")
    add(
        f"The executor handler with the OpenAI provider in {t['environments']} environments (processes, as Lambda runs "
        f"them) fed from an SQS queue on a moto server as the event source mapping feeds them (long polls of up to 10 "
        f"messages, hidden for the queue's visibility timeout, delays honoured, the messages not reported as failures "
        f"deleted), the sweeper every minute, against an OpenAI-compatible stub (`tests/support/tpm_stub.py`) that "
        f"enforces {t['tpm']:,} tokens per minute as OpenAI estimates a request - ceil(characters of its messages / 4) "
        f"+ max_tokens, in a sliding 60 s window at arrival, past it 429 with Retry-After - and answers after "
        f"{low}-{high} ms with that usage. {t['backlog']} tasks of {t['tenants']} tenants (prompts of "
        f"{t['prompt_chars']:,} characters, maxTokens {t['max_tokens']}: {t['tokens_per_call']:,} tokens a call as "
        f"the stub counts it"
        + (f"; the claim counted {counted:,}" if counted else "")
        + f") created through the create use case before the environments start. The first {t['warmup_s']:g} s fill "
        f"the window; the next {t['measured_s']:g} s are measured.\n"
    )
    add("| minute | calls | answered 429 | tokens admitted | of the tpm |\n|---|---|---|---|---|")
    for i, m in enumerate(t.get("minutes") or [], 1):
        add(f"| {i} | {m['calls']} | {m['calls_429']} | {m['tokens']:,} | {_pct(m['tokens'] / t['tpm'])} |")
    db = t.get("database") or {}
    tasks = ", ".join(f"{k} {v}" for k, v in (db.get("tasks") or {}).items())
    attempts = ", ".join(f"{k} {v}" for k, v in (db.get("attempts") or {}).items())
    add(
        f"\nIn steady state: **{_pct(t['utilisation'])} of the tpm used** ({t['tokens_per_minute']:,} tokens a "
        f"minute), **{_pct(t['calls_429_fraction'], 1)} of {t['calls']} calls answered 429**. Over the run: "
        f"{t['invocations']} invocations started with {t['wake_ups_received']} wake-ups "
        f"({t['wake_ups_handed_back']} handed back), {t['sweeps']} sweeps; tasks at the end: {tasks}; attempts: "
        f"{attempts}.\n"
    )
    if t.get("timeline_10s"):
        add("<details><summary>Every 10 s: calls, answered 429, tokens admitted</summary>\n\n```")
        for second, calls, rejected, tokens in t["timeline_10s"]:
            add(f"{second:>4} s  {calls:>4} calls  {rejected:>3} x 429  {tokens:>8,} tokens")
        add("```\n</details>\n")


def _scarcity_fairness(add: Any, f: dict[str, Any], w: dict[str, Any], late: dict[str, Any]) -> None:
    if "jain" not in f:
        return
    add("### 7b. Shares of a rate-limited model\n")
    add(
        f"In virtual time through the repository: claim_due(limit={f['claim_limit']}) every {f['tick_s']:g} s of a "
        f"clock the statements get as their `now` (half a slot: the model's rpm {f['rpm']} is one call every "
        f"{f['slot_s']:g} s; a claim for one slot, as an executor's refill after a run or a deferral's wake-up "
        f"makes it on a saturated model), each run ending {f['latency_ms']} ms later through finish_runs - exactly the "
        f"SQL's allocation, deterministic. {f['tenants']} tenants with backlogs from {min(f['backlogs'])} to "
        f"{max(f['backlogs'])} tasks, submitted through the create use case in a random interleaving over 30 s before "
        f"the first claim, equal weights. A share is the calls a tenant started while every tenant still had queued "
        f"work: {f['period_starts']} starts over {f['period_s']:g} s (then {f['period_end']}).\n"
    )
    total = max(1, f["period_starts"])
    add("| backlog | starts | share |\n|---|---|---|")
    for backlog, n in zip(f["backlogs"], f["starts"], strict=True):
        add(f"| {backlog} | {n} | {_pct(n / total)} |")
    add(
        f"\nJain's index: **{f['jain']:.3f}** (1: equal shares). The most starts in any 60 s: "
        f"{f['most_starts_in_a_window']} (rpm {f['rpm']}).\n"
    )
    if w.get("skipped"):
        add(f"Weights: {w['skipped']}.\n")
    elif "ratio" in w:
        starts = w.get("starts") or {}
        add(
            f"Weights: two tenants weighted {w['weights']['heavy']} and {w['weights']['light']} (set_weight), both "
            f"backlogged: {starts.get('heavy', 0)} and {starts.get('light', 0)} starts, **{_num(w['ratio'])} : 1**.\n"
        )
    if "started" in late:
        add(
            f"A late tenant: {late['busy_tenants']} tenants keep the model busy for {late['arrived_after_s']} s, then "
            f"another submits its first tasks between two claims (within one slot: at most the slot being handed out "
            f"goes to another tenant first): "
            + (
                f"**its first started {late['wait_s']:g} s later ({late['wait_slots']:g} slots)**, after "
                f"{late['others_before']} starts of the others."
                if late["started"]
                else f"**it had not started {late['max_wait_s']} s later**; the others started {late['others_before']}."
            )
            + "\n"
        )


def _scarcity_budget(add: Any, b: dict[str, Any]) -> None:
    if "utilisation" not in b:
        return
    add("### 7c. A month's budget\n")
    add(
        f"In virtual time as above (a claim of up to {b['claim_limit']} every second, runs of {b['latency_ms']} ms): "
        f"one tenant (its cap 10) with {b['tasks']} tasks (prompts of {b['prompt_chars']:,} characters) whose "
        f"worst cost - priced on maxTokens and an upper bound of the input, what an attempt holds - is "
        f"{_usd(b['worst_cost_usd'])} each, and a budget of {b['budget_holds']} of them, {_usd(b['budget_usd'])}: no "
        f"task fits once more than {_pct(1 - 1 / b['budget_holds'])} is spent, so an engine that leaves no room "
        f"unused ends past that. Each run ends with a quarter of those tokens, its real cost "
        f"{_num(b['real_over_worst'])} of its worst (the backlog's real cost: {_usd(b['backlog_worst_usd'])} / 4). "
        f"It runs until nothing runs and a claim a window later still starts nothing.\n"
    )
    add("| | |\n|---|---|")
    add(f"| spent when {b['stop']} | {_usd(b['spent_usd'])} (**{_pct(b['utilisation'], 1)}** of the budget) |")
    add(f"| the most spent at any claim | {_pct(b['max_spent_fraction'], 1)} |")
    add(f"| the most spent + held at any claim | {_pct(b['max_committed_fraction'], 1)} |")
    add(f"| runs / tasks still waiting | {b['runs']} / {b['still_waiting']} |")
    add(f"| virtual time | {b['virtual_s']:g} s, {b['claims']} claims |\n")


def _scarcity_claim(add: Any, c: dict[str, Any]) -> None:
    if "claims" not in c:
        return
    add("### 7d. A claim at scale\n")
    due = ", ".join(f"{k} {v:,}" for k, v in (c.get("due_by_model") or {}).items())
    add(
        f"One claim_due(limit=10) through the repository, as an executor makes it, with {c['tenants']:,} tenants x "
        f"{c['due_per_tenant']} due tasks on a popular model paused by a 429 (a run of it ended with a two-hour "
        f"Retry-After: {'paused' if c['paused'] else 'NOT paused'}), {c['budget_tasks']:,} due tasks of "
        f"{c['budget_tenants']} tenants whose month has spent its budget, and {c['claimable']:,} claimable tasks of "
        f"{c['claimable_tenants']} tenants on another model, more recent (due: {due}). Each tenant's first task went "
        f"through the create use case, the rest are copies of it (loaded in {c['load_s']:g} s). What each claim "
        f"starts ends at once, untimed; {c['warmup']} claims first, not counted.\n"
    )
    add("| claims | failed | first (ms) | median | p95 | p99 | max | started per claim |")
    add("|---|---|---|---|---|---|---|---|")
    add(
        f"| {c['claims']} | {c['failed']}{' (' + ', '.join(c['errors']) + ')' if c['errors'] else ''} | "
        f"{_num(c['first_ms'], 1)} | {_num(c['median_ms'], 1)} | {_num(c['p95_ms'], 1)} | {_num(c['p99_ms'], 1)} | "
        f"{_num(c['max_ms'], 1)} | {_num(c['claimed_per_claim'], 1)} |\n"
    )
