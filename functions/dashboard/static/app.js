// The dashboard: sign in with an API key, the tenant's task list, a task's details, live updates.
// Everything the API returns is put in the page with textContent, never as HTML.

import { Api, ProblemError } from "./api.js";
import { Live } from "./live.js";

const KEY_SLOT = "aitasks.apiKey";
const PAGE_SIZE = 20;
const LONG_PROMPT = 280;
const CANCELLABLE = new Set(["created", "queued", "reserved", "running", "failed"]);
const FINAL = new Set(["succeeded", "cancelled", "dead_letter"]);

const $ = (id) => document.getElementById(id);
const state = { api: null, live: null, page: 1, total: 0, status: "", type: "", taskId: null, formKey: null };
let refreshTimer = null;

// ---- small DOM helpers ---------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

const statusLabel = (status) => (status === "dead_letter" ? "dead letter" : status);

function statusBadge(status, cancelRequested = false) {
  // The text says the status; the colour only repeats it.
  const label = statusLabel(status) + (cancelRequested && !FINAL.has(status) ? " (cancel requested)" : "");
  return el("span", { class: `status status-${status}`, text: label });
}

// Why a queued task is not running yet (the API's waitingFor).
const WAITING = {
  schedule: "until its scheduled time",
  retry: "until its retry time",
  concurrency: "for a free slot (concurrency cap)",
  rate_limit: "for its model's rate limit",
  budget: "for budget (this month's is used up)",
};

function taskStatus(task) {
  const badge = statusBadge(task.status, task.cancelRequested);
  const why = WAITING[task.waitingFor];
  return why ? el("span", {}, badge, el("span", { class: "waiting", text: ` waiting ${why}` })) : badge;
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const shortDateFormat = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

function when(iso, format = dateFormat) {
  if (!iso) return el("span", { text: "—" });
  return el("time", { datetime: iso, title: dateFormat.format(new Date(iso)), text: format.format(new Date(iso)) });
}

const cost = (value) => (value === null || value === undefined ? "—" : `$${Number(value).toFixed(6)}`);
const number = (value) => (value === null || value === undefined ? "—" : String(value));
const shortId = (id) => id.slice(0, 8);

function announce(message) {
  const announcer = $("announcer");
  announcer.textContent = "";
  setTimeout(() => {
    announcer.textContent = message;
  }, 50);
}

function showProblem(box, error) {
  box.replaceChildren();
  if (!error) {
    box.hidden = true;
    return;
  }
  const problem = error instanceof ProblemError ? error : new ProblemError(0, { title: "Error", detail: String(error) });
  box.append(el("strong", { text: problem.title }));
  if (problem.detail) box.append(document.createTextNode(`: ${problem.detail}`));
  if (problem.errors.length) {
    box.append(el("ul", {}, ...problem.errors.map((e) => el("li", { text: `${e.field}: ${e.message}` }))));
  }
  box.hidden = false;
}

// ---- signing in and out --------------------------------------------------------------------------------------

async function signIn(key) {
  const api = new Api(key);
  await api.listTasks({ page: 1, pageSize: 1 }); // a 401 here means the key is wrong
  sessionStorage.setItem(KEY_SLOT, key);
  start(api);
}

function start(api) {
  state.api = api;
  $("login").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("live").hidden = false;
  state.live = new Live(api, {
    onEvent: handleEvent,
    onState: showLiveState,
    onPoll: refresh,
    onUnauthorized: (error) => signOut(error),
  });
  state.live.start();
  route();
  loadUsage();
}

// This month's spend against the budget (GET /usage), refreshed with the list.
function usd(text) {
  const value = Number(text);
  if (value === 0) return "$0";
  return `$${value.toFixed(value < 0.01 ? 6 : value < 1 ? 4 : 2)}`;
}

async function loadUsage() {
  try {
    const { data } = await state.api.usage();
    const spent = `${usd(data.spentUsd)} spent${Number(data.reservedUsd) ? `, ${usd(data.reservedUsd)} held` : ""}`;
    $("usage").textContent = data.budgetUsd === null
      ? `This month: ${spent}`
      : `This month: ${spent} of ${usd(data.budgetUsd)}`;
    $("usage").hidden = false;
  } catch {
    $("usage").hidden = true; // the spend line is a courtesy: the list's own problems are shown there
  }
}

function signOut(error) {
  sessionStorage.removeItem(KEY_SLOT);
  $("usage").hidden = true;
  if (state.live) state.live.stop();
  state.api = null;
  state.live = null;
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("live").hidden = true;
  $("login").hidden = false;
  $("api-key").value = "";
  showProblem($("login-problem"), error || null);
  $("api-key").focus();
}

function showLiveState(which) {
  const live = $("live");
  live.dataset.state = which;
  live.textContent = {
    live: "Live updates on",
    connecting: "Connecting live updates; refreshing every 5 s",
    polling: "Live updates reconnecting; refreshing every 5 s",
    off: "",
  }[which];
}

// ---- routing: #/ is the list, #/tasks/<id> a task --------------------------------------------------------------

function route() {
  if (!state.api) return;
  const match = /^#\/tasks\/([0-9a-f-]{36})$/.exec(location.hash);
  const previous = state.taskId;
  state.taskId = match ? match[1] : null;
  $("list-view").hidden = Boolean(state.taskId);
  $("detail-view").hidden = !state.taskId;
  if (state.taskId) {
    loadDetail(state.taskId).then(() => $("detail-title").focus());
  } else {
    loadList().then(() => {
      const link = previous && document.querySelector(`a[data-task="${previous}"]`);
      if (link) link.focus();
    });
  }
}

function refresh() {
  if (!state.api) return;
  if (state.taskId) loadDetail(state.taskId);
  else loadList();
  loadUsage();
}

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 250);
}

function handleEvent({ event, detail }) {
  const visible = state.taskId ? detail.taskId === state.taskId : document.querySelector(`a[data-task="${detail.taskId}"]`);
  if (visible && FINAL.has(detail.status)) announce(`Task ${shortId(detail.taskId)} ${statusLabel(detail.status)}`);
  if (state.taskId && detail.taskId !== state.taskId) return;
  if (!state.taskId && !visible && event !== "task.created") return;
  refreshSoon();
}

// ---- the list ------------------------------------------------------------------------------------------------

async function loadList() {
  const box = $("list-problem");
  try {
    const { data, headers } = await state.api.listTasks({
      status: state.status,
      type: state.type,
      page: state.page,
      pageSize: PAGE_SIZE,
    });
    state.total = Number(headers.get("X-Total-Count") || 0);
    const pages = Math.max(1, Math.ceil(state.total / PAGE_SIZE));
    if (state.page > pages) {
      state.page = pages;
      return loadList();
    }
    renderRows(data || []);
    $("page-info").textContent = `Page ${state.page} of ${pages} · ${state.total} task${state.total === 1 ? "" : "s"}`;
    $("prev").disabled = state.page <= 1;
    $("next").disabled = state.page >= pages;
    showProblem(box, null);
  } catch (error) {
    if (error.status === 401) return signOut(error);
    showProblem(box, error);
  }
  return undefined;
}

function actionButtons(task, after) {
  const buttons = [];
  const label = `task ${shortId(task.id)}`;
  if (CANCELLABLE.has(task.status) && !(task.status === "running" && task.cancelRequested)) {
    buttons.push(
      el("button", {
        type: "button",
        class: "quiet",
        text: "Cancel",
        "aria-label": `Cancel ${label}`,
        onclick: () => command(() => state.api.cancel(task.id), `Cancel requested for ${label}`, after),
      }),
    );
  }
  if (task.status === "dead_letter") {
    buttons.push(
      el("button", {
        type: "button",
        class: "quiet",
        text: "Retry",
        "aria-label": `Retry ${label}`,
        onclick: () => command(() => state.api.retry(task.id), `Retrying ${label}`, after),
      }),
    );
  }
  return buttons;
}

async function command(call, message, box) {
  try {
    await call();
    announce(message);
    showProblem(box, null);
  } catch (error) {
    if (error.status === 401) return signOut(error);
    showProblem(box, error);
  }
  refresh();
  return undefined;
}

function excerpt(task) {
  const prompt = String((task.payload && task.payload.prompt) || "");
  return prompt.length > 60 ? `${prompt.slice(0, 57)}…` : prompt;
}

function renderRows(tasks) {
  const body = $("tasks").tBodies[0];
  body.replaceChildren(
    ...tasks.map((task) =>
      el(
        "tr",
        { "data-status": task.status },
        el(
          "td",
          { "data-label": "Task" },
          el("a", { href: `#/tasks/${task.id}`, "data-task": task.id, text: excerpt(task) || shortId(task.id) }),
          el("span", { class: "id", text: ` ${shortId(task.id)}` }),
        ),
        el("td", { "data-label": "Status" }, taskStatus(task)),
        el("td", { "data-label": "Type", text: task.type }),
        el("td", { "data-label": "Priority", text: String(task.priority) }),
        el("td", { "data-label": "Created" }, when(task.createdAt, shortDateFormat)),
        el("td", { "data-label": "Attempts", text: `${task.attemptCount} of ${task.maxAttempts}` }),
        el("td", { "data-label": "Tokens", text: `${task.tokensIn} / ${task.tokensOut}` }),
        el("td", { "data-label": "Cost", text: cost(task.cost) }),
        el("td", { class: "row-actions" }, ...actionButtons(task, $("list-problem"))),
      ),
    ),
  );
  $("empty").hidden = tasks.length > 0;
}

// ---- a new task ----------------------------------------------------------------------------------------------

function taskBody(form) {
  const body = { type: form.type.value, payload: { prompt: form.prompt.value } };
  const context = form.context.value;
  if (context.trim()) {
    let parsed = null;
    try {
      parsed = JSON.parse(context);
    } catch {
      parsed = null;
    }
    body.payload.context = parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : context;
  }
  const priority = form.priority.value.trim();
  // Sent as typed, so the API judges it (and says what is wrong) rather than the page.
  if (priority !== "") body.priority = /^-?\d+$/.test(priority) ? Number(priority) : priority;
  if (form.scheduledAt.value) body.scheduledAt = new Date(form.scheduledAt.value).toISOString();
  return body;
}

const FIELD_INPUTS = { type: "nt-type", "payload.prompt": "nt-prompt", "payload.context": "nt-context", priority: "nt-priority", scheduledAt: "nt-scheduled" };

function markFields(errors) {
  for (const id of Object.values(FIELD_INPUTS)) $(id).removeAttribute("aria-invalid");
  for (const { field } of errors) {
    const id = FIELD_INPUTS[field];
    if (id) $(id).setAttribute("aria-invalid", "true");
  }
}

async function submitTask(event) {
  event.preventDefault();
  const form = event.target;
  const box = $("new-problem");
  // One key per submission: a retry after a network error sends the same key, so it cannot create two tasks.
  state.formKey = state.formKey || crypto.randomUUID();
  form.querySelector("button[type=submit]").disabled = true;
  try {
    const { data } = await state.api.createTask(taskBody(form), state.formKey);
    state.formKey = null;
    form.prompt.value = "";
    form.context.value = "";
    form.scheduledAt.value = "";
    markFields([]);
    showProblem(box, null);
    announce(`Task ${shortId(data.id)} created: ${statusLabel(data.status)}`);
    state.page = 1;
    await loadList();
  } catch (error) {
    if (error.status === 401) return signOut(error);
    if (error.status !== 0) state.formKey = null; // the API answered: the key was released or used
    markFields(error.errors || []);
    showProblem(box, error);
    box.focus();
  } finally {
    form.querySelector("button[type=submit]").disabled = false;
  }
  return undefined;
}

// ---- a task's details ----------------------------------------------------------------------------------------

async function loadDetail(id) {
  const box = $("detail-problem");
  try {
    const [task, attempts, artifacts, events] = await Promise.all([
      state.api.task(id),
      state.api.part(id, "attempts"),
      state.api.part(id, "artifacts"),
      state.api.part(id, "events"),
    ]);
    if (state.taskId !== id) return;
    renderDetail(task.data, attempts.data || [], artifacts.data || [], events.data || []);
    showProblem(box, null);
  } catch (error) {
    if (error.status === 401) return signOut(error);
    showProblem(box, error);
  }
  return undefined;
}

function renderDetail(task, attempts, artifacts, events) {
  $("detail-title").textContent = `Task ${shortId(task.id)} · ${task.type}`;
  const rows = [
    ["Status", taskStatus(task)],
    ["Id", el("code", { text: task.id })],
    ["Priority", String(task.priority)],
    ["Created", when(task.createdAt)],
    ["Updated", when(task.updatedAt)],
    ["Scheduled", when(task.scheduledAt)],
    ["Attempts", `${task.attemptCount} of ${task.maxAttempts}`],
    ["Tokens in / out", `${task.tokensIn} / ${task.tokensOut}`],
    ["Cost", cost(task.cost)],
  ];
  if (task.lastError) rows.push(["Last error", task.lastError]);
  $("summary").replaceChildren(...rows.flatMap(([term, value]) => [el("dt", { text: term }), el("dd", {}, value)]));
  $("detail-actions").replaceChildren(...actionButtons(task, $("detail-problem")));
  renderPayload(task.payload || {});
  renderAttempts(attempts);
  renderArtifacts(artifacts);
  $("history").replaceChildren(
    ...(events.length
      ? events.map((e) =>
          el(
            "li",
            {},
            when(e.occurredAt),
            " ",
            el("span", { class: "event", text: e.eventType }),
            " → ",
            statusBadge(e.status || "unknown"),
            e.attemptNo ? ` (attempt ${e.attemptNo})` : "",
          ),
        )
      : [el("li", { class: "hint", text: "No events kept (they are pruned a week after publication)." })]),
  );
}

function renderPayload(payload) {
  const parts = [];
  const prompt = String(payload.prompt || "");
  if (prompt.length > LONG_PROMPT) {
    parts.push(
      el("details", { class: "prompt" }, el("summary", { text: `Prompt (${prompt.length} characters): ${prompt.slice(0, 80)}…` }), el("pre", { text: prompt })),
    );
  } else {
    parts.push(el("h3", { text: "Prompt" }), el("pre", { text: prompt }));
  }
  if (payload.context !== undefined && payload.context !== null) {
    const text = typeof payload.context === "string" ? payload.context : JSON.stringify(payload.context, null, 2);
    parts.push(el("details", { class: "prompt" }, el("summary", { text: "Context" }), el("pre", { text })));
  }
  if (payload.model) parts.push(el("p", {}, el("strong", { text: "Model: " }), payload.model));
  if (payload.params) parts.push(el("details", {}, el("summary", { text: "Parameters" }), el("pre", { text: JSON.stringify(payload.params, null, 2) })));
  $("payload").replaceChildren(...parts);
}

function renderAttempts(attempts) {
  const body = $("attempts").tBodies[0];
  if (!attempts.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "8", class: "hint", text: "No attempt yet." })));
    return;
  }
  body.replaceChildren(
    ...attempts.map((a) =>
      el(
        "tr",
        {},
        el("td", { "data-label": "#", text: String(a.attemptNo) }),
        el("td", { "data-label": "Status" }, statusBadge(a.status)),
        el("td", { "data-label": "Model", text: a.model || "—" }),
        el("td", { "data-label": "Tokens in", text: number(a.tokensIn) }),
        el("td", { "data-label": "Tokens out", text: number(a.tokensOut) }),
        el("td", { "data-label": "Cost", text: cost(a.cost) }),
        el("td", { "data-label": "Latency", text: a.latencyMs === null ? "—" : `${a.latencyMs} ms` }),
        el("td", { "data-label": "Error", text: a.errorCode ? `${a.errorCode}${a.errorDetail ? `: ${a.errorDetail}` : ""}` : "—" }),
      ),
    ),
  );
}

function safeLink(uri) {
  try {
    const url = new URL(uri, location.href);
    if (url.protocol === "https:" || url.protocol === "http:") return el("a", { href: url.href, rel: "noopener noreferrer", target: "_blank", text: uri });
  } catch {
    // not a URL: shown as text below
  }
  return el("code", { text: uri });
}

function renderArtifacts(artifacts) {
  if (!artifacts.length) {
    $("artifacts").replaceChildren(el("p", { class: "hint", text: "No artifact yet." }));
    return;
  }
  $("artifacts").replaceChildren(
    ...artifacts.map((a) => {
      let content;
      if (a.kind === "json") {
        let text = a.content || "";
        try {
          text = JSON.stringify(JSON.parse(text), null, 2);
        } catch {
          // shown as stored
        }
        content = el("pre", { class: "json", text });
      } else if (a.kind === "link" || a.kind === "file") {
        content = a.uri ? el("p", {}, safeLink(a.uri)) : el("pre", { text: a.content || "" });
      } else {
        content = el("p", { class: "text-artifact", text: a.content || "" });
      }
      return el("article", { class: "artifact" }, el("h3", {}, `${a.kind} · `, when(a.createdAt)), content);
    }),
  );
}

// ---- wiring --------------------------------------------------------------------------------------------------

function init() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    const button = event.target.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await signIn(key);
    } catch (error) {
      showProblem($("login-problem"), error);
    } finally {
      button.disabled = false;
    }
  });
  $("sign-out").addEventListener("click", () => signOut(null));
  $("new-task").addEventListener("submit", submitTask);
  $("new-task").addEventListener("input", () => {
    state.formKey = null;
  });
  $("filters").addEventListener("change", (event) => {
    state[event.target.name] = event.target.value;
    state.page = 1;
    loadList();
  });
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("prev").addEventListener("click", () => {
    state.page = Math.max(1, state.page - 1);
    loadList();
  });
  $("next").addEventListener("click", () => {
    state.page += 1;
    loadList();
  });
  window.addEventListener("hashchange", route);

  const key = sessionStorage.getItem(KEY_SLOT);
  if (key) start(new Api(key));
  else signOut(null);
}

init();
