// The REST API, relative to the page (…/v1/ serves the page, …/v1/api/v1/ the API): the key goes in the
// Authorization header only; errors come back as RFC 9457 problems and are thrown as ProblemError.

export class ProblemError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem.title || `HTTP ${status}`;
    this.detail = problem.detail || "";
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
  }
}

export class Api {
  constructor(key) {
    this.key = key;
  }

  async request(method, path, { body, headers = {} } = {}) {
    const init = { method, headers: { Accept: "application/json", Authorization: `Bearer ${this.key}`, ...headers } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(`api/v1/${path}`, init);
    } catch (error) {
      throw new ProblemError(0, { title: "Network error", detail: "the API cannot be reached; retrying helps" });
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      // API Gateway's own answers are problems on AWS; elsewhere they may be {"message": "..."}.
      const problem = data && typeof data === "object" ? data : {};
      if (!problem.title && problem.message) problem.detail = problem.message;
      if (!problem.title) problem.title = response.statusText || `HTTP ${response.status}`;
      throw new ProblemError(response.status, problem);
    }
    return { data, headers: response.headers };
  }

  listTasks({ status, type, page, pageSize }) {
    const query = new URLSearchParams({ page: String(page), pageSize: String(pageSize) });
    if (status) query.set("status", status);
    if (type) query.set("type", type);
    return this.request("GET", `tasks?${query}`);
  }

  task(id) {
    return this.request("GET", `tasks/${encodeURIComponent(id)}`);
  }

  part(id, part) {
    return this.request("GET", `tasks/${encodeURIComponent(id)}/${part}`);
  }

  createTask(body, idempotencyKey) {
    return this.request("POST", "tasks", { body, headers: { "Idempotency-Key": idempotencyKey } });
  }

  cancel(id) {
    return this.request("POST", `tasks/${encodeURIComponent(id)}/cancel`);
  }

  retry(id) {
    return this.request("POST", `tasks/${encodeURIComponent(id)}/retry`);
  }

  usage() {
    return this.request("GET", "usage");
  }

  ticket() {
    return this.request("POST", "websocket-tickets");
  }
}
