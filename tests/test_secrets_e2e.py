"""No secret leaves the service: the Redis password and the admin token, with a real `nsprecall
serve` process and a real `redis-server` that requires the password.

The process is started at debug log level, taken through start-up, recall, event ingestion,
admin calls without, with a wrong and with the right token, validation errors, and shutdown;
neither secret may appear in its output (stdout and stderr), in /metrics or in any response
body. A start-up refused by settings validation must not print them either. (That the
container runs as a non-root user is checked by tests/test_docker.py.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from cli_helpers import CLI, ROOT, serve_process
from fakes import event_body, history, write_real_bundle
from pydantic import ValidationError
from redis_servers import RedisServer, running

from service.settings import Settings

pytest.importorskip("onnx")

PASSWORD = "redis-pw-Zq81xVt0b"
TOKEN = "admin-token-Kp3nW7rYs2dLq9"
WRONG_TOKEN = "not-the-admin-token-1234"


def test_a_served_process_never_shows_the_redis_password_or_the_admin_token(tmp_path: Path) -> None:
    bundles, log_path = tmp_path / "bundles", tmp_path / "serve.log"
    write_real_bundle(bundles, 1, n_items=60)
    server = RedisServer(tmp_path / "redis", ["--requirepass", PASSWORD])
    url = f"redis://default:{PASSWORD}@127.0.0.1:{server.port}/0"
    env = {"NSP_ADMIN_TOKEN": TOKEN, "NSP_LOG_LEVEL": "debug", "NSP_WATCH_INTERVAL_S": "0.5"}
    bodies: list[str] = []

    def call(client: httpx.Client, method: str, path: str, status: int, **kwargs: object) -> httpx.Response:
        response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
        bodies.append(response.text + str(response.headers))
        assert response.status_code == status, (method, path, response.text)
        return response

    with running(server, ping_url=url), serve_process(bundles, url, env=env, log_path=log_path) as client:
        admin, wrong = {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"Bearer {WRONG_TOKEN}"}
        events = [event_body(e) for e in history("alice", ["item-0001", "item-0002", "item-0003"])]
        call(client, "POST", "/v1/events", 202, json={"events": events})
        assert (
            call(client, "POST", "/v1/recall", 200, json={"user_id": "alice", "k": 5}).json()["source"]
            == "model"
        )
        call(client, "POST", "/v1/recall", 200, json={"user_id": "nobody", "k": 5})
        call(client, "GET", "/v1/users/alice/sessions", 200)
        call(client, "POST", "/v1/recall", 422, json={"user_id": "alice", "k": 0})
        call(
            client,
            "POST",
            "/v1/recall",
            422,
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        call(client, "POST", "/v1/events", 422, json={"events": [{"user_id": "alice"}]})
        for path in ("/v1/admin/bundle", "/v1/admin/reload"):
            method = "GET" if path.endswith("bundle") else "POST"
            call(client, method, path, 401)
            call(client, method, path, 401, headers=wrong)
            call(client, method, path, 401, headers={"Authorization": f"Basic {TOKEN}"})
            call(client, method, path, 200, headers=admin)
        call(client, "PUT", "/v1/admin/pin", 200, json={"version": 1}, headers=admin)
        call(client, "PUT", "/v1/admin/pin", 422, json={"version": "one"}, headers=admin)
        call(client, "DELETE", "/v1/admin/pin", 200, headers=admin)
        for path in ("/v1/bundle", "/readyz", "/livez", "/openapi.json", "/metrics"):
            call(client, "GET", path, 200)
    output = log_path.read_text()

    assert f"redis://default:***@127.0.0.1:{server.port}/0" in output  # the line a leak would be in
    assert "admin GET /v1/admin/bundle from 127.0.0.1 denied: wrong bearer token" in output
    assert "nsp_admin_actions_total" in bodies[-1]
    for secret in (PASSWORD, TOKEN, WRONG_TOKEN):
        assert secret not in output
        leaked = [body[:200] for body in bodies if secret in body]
        assert not leaked, f"a response shows {secret!r}: {leaked}"


@pytest.mark.parametrize(
    "bad",
    [
        {"NSP_PORT": "-1"},
        {"NSP_DEFAULT_K": "500", "NSP_MAX_K": "100"},
        {"NSP_ADMIN_TOKEN": "short-" + PASSWORD[:4]},
    ],
    ids=["field", "model", "token"],
)
def test_a_start_up_refused_by_validation_does_not_print_the_secrets(
    bad: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "NSP_REDIS_URL": f"redis://default:{PASSWORD}@127.0.0.1:1/0",
        "NSP_ADMIN_TOKEN": TOKEN,
        **bad,
    }
    done = subprocess.run(
        [*CLI, "serve", "--bundles", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "validation error" in output, output[-2000:]
    for secret in (PASSWORD, TOKEN, bad.get("NSP_ADMIN_TOKEN", TOKEN)):
        assert secret not in output


def test_settings_show_neither_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NSP_REDIS_URL", f"redis://default:{PASSWORD}@redis:6379/0")
    monkeypatch.setenv("NSP_ADMIN_TOKEN", TOKEN)
    settings = Settings()
    shown = [repr(settings), str(settings), str(settings.model_dump()), settings.model_dump_json()]
    secrets = {"redis_url": f"redis://:{PASSWORD}@redis:6379/0", "admin_token": TOKEN}
    invalid: list[dict[str, object]] = [
        {"port": -1},
        {"default_k": 500, "max_k": 100},
        {"redis_url": [PASSWORD]},
        {"admin_token": PASSWORD[:8]},
    ]
    for bad in invalid:
        with pytest.raises(ValidationError) as failure:
            Settings(**{**secrets, **bad})
        # What is printed; ``errors()`` still holds the input (hide_input_in_errors only hides it
        # from the message), so it must never be logged.
        shown += [str(failure.value), repr(failure.value)]
    for text in shown:
        assert PASSWORD[:8] not in text and TOKEN not in text
