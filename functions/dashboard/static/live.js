// Live updates: a WebSocket opened with a single-use ticket (never the key: a browser cannot send headers on a
// WebSocket, and URLs end in logs). It reconnects with exponential backoff and jitter; while it is down the page
// polls every 5 s instead, so it never needs a reload.

const POLL_MS = 5000;
const KEEPALIVE_MS = 5 * 60 * 1000; // API Gateway closes a connection idle for 10 minutes
const MAX_BACKOFF_MS = 30000;
const HANDSHAKE_MS = 20000;

export class Live {
  constructor(api, { onEvent, onState, onPoll, onUnauthorized }) {
    this.api = api;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onPoll = onPoll;
    this.onUnauthorized = onUnauthorized;
    this.socket = null;
    this.failures = 0;
    this.stopped = true;
    this.pollTimer = null;
    this.retryTimer = null;
    this.keepAliveTimer = null;
  }

  start() {
    this.stopped = false;
    this.polling(true); // until the socket is open
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.keepAliveTimer);
    this.polling(false);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000, "signed out");
      this.socket = null;
    }
    this.onState("off");
  }

  polling(on) {
    if (on && this.pollTimer === null) {
      this.pollTimer = setInterval(() => this.onPoll(), POLL_MS);
    } else if (!on && this.pollTimer !== null) {
      clearInterval(this.pollTimer);
      this.pollTimer = null;
    }
  }

  async connect() {
    if (this.stopped) return;
    this.onState(this.failures ? "polling" : "connecting");
    let ticket;
    try {
      ({ data: ticket } = await this.api.ticket());
    } catch (error) {
      if (error.status === 401) {
        this.onUnauthorized(error);
        return;
      }
      this.retry();
      return;
    }
    if (this.stopped) return;
    let socket;
    try {
      socket = new WebSocket(`${ticket.url}?ticket=${encodeURIComponent(ticket.ticket)}`);
    } catch {
      this.retry();
      return;
    }
    this.socket = socket;
    const handshake = setTimeout(() => socket.close(), HANDSHAKE_MS); // a hung handshake counts as a failure
    socket.onopen = () => {
      clearTimeout(handshake);
      this.failures = 0;
      this.polling(false);
      this.onState("live");
      this.onPoll(); // catch up on what happened while the socket was down
      clearInterval(this.keepAliveTimer);
      this.keepAliveTimer = setInterval(() => {
        if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ action: "ping" }));
      }, KEEPALIVE_MS);
    };
    socket.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (event && event.detail && event.detail.taskId) this.onEvent(event);
    };
    socket.onclose = () => {
      clearTimeout(handshake);
      clearInterval(this.keepAliveTimer);
      if (this.socket === socket) this.socket = null;
      this.retry();
    };
  }

  retry() {
    if (this.stopped) return;
    this.failures += 1;
    this.polling(true);
    this.onState("polling");
    const backoff = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (this.failures - 1));
    const delay = backoff * (0.8 + Math.random() * 0.4);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}
