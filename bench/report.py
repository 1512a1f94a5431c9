"""docs/benchmarks.md from bench/results.json: a table per scenario, the targets and whether each is met."""

from __future__ import annotations

from typing import Any

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
    return rows


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
    add(f"| load | load average {meta.get('load', '?')} at the start (the machine is shared) |\n")

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
    add("## Running it\n")
    add(
        "`make bench` installs the `bench` extra and the local tools, then runs every scenario (about ten minutes "
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
