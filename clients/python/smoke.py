"""`make client-wheel`: the installed wheel, alone in a fresh virtual environment (no server package, no tests),
imports, builds a create with its Idempotency-Key, retries a 503 and raises a typed problem."""

import json

import aitasks_client
import httpx2
from aitasks_client import Client, NotFoundError

seen: list[httpx2.Request] = []


def answer(request: httpx2.Request) -> httpx2.Response:
    seen.append(request)
    if len(seen) == 1:
        return httpx2.Response(503, headers={"Retry-After": "0"}, json={"message": "Service Unavailable"})
    problem = {"type": "https://aitasks.dev/problems/task-not-found", "title": "Not Found", "status": 404,
               "detail": "no task", "instance": request.url.path, "traceId": "t"}  # fmt: skip
    return httpx2.Response(404, json=problem)


with Client("http://api.test/v1/api/v1", "ait_k", transport=httpx2.MockTransport(answer)) as client:
    try:
        client.create("chat", "hi")
    except NotFoundError as exc:
        assert exc.problem.type.endswith("/task-not-found")
assert len(seen) == 2 and seen[0].headers["Idempotency-Key"] == seen[1].headers["Idempotency-Key"]
assert json.loads(seen[1].content) == {"type": "chat", "payload": {"prompt": "hi"}}
assert seen[1].headers["User-Agent"].startswith(f"aitasks-client/{aitasks_client.__version__}")
assert "aitasks" not in {m.split(".")[0] for m in __import__("sys").modules}  # nothing of the server
print(f"aitasks-client {aitasks_client.__version__}: the wheel works on its own")
