"""Server hardening: tokens, keys, image links, body size, rate limits, CORS and headers, through the real ASGI app."""

from __future__ import annotations

import json
import math
import time

import pytest
from fastapi.testclient import TestClient

from crowdpatch.server.app import create_app
from crowdpatch.server.limits import TokenBuckets
from crowdpatch.server.schemas import MAX_POLYGON_POINTS
from crowdpatch.server.tokens import WorkerSession, _b64, _unb64, image_signature, issue_session
from helpers.sessions import open_session


def quiet(config) -> None:
    config.server.answers_per_session = 50
    config.crowd.gold_rate = 0.0


@pytest.fixture
def served(make_project):
    project = make_project(n_images=3, size=64, configure=quiet)
    with TestClient(create_app(project)) as client:
        yield project, client


def api_key(project) -> dict[str, str]:
    return {"X-API-Key": project.config.server.effective_api_key()}


# -- tokens and keys ------------------------------------------------------------------------------


def test_an_expired_session_token_is_401(served):
    project, client = served
    server = project.config.server
    expired = issue_session(
        server.session_secret, WorkerSession(1, project.uid, "k", "prolific", "patch", time.time() - 1)
    )
    response = client.get("/api/v1/tasks/next", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_a_tampered_session_token_is_401(served):
    project, client = served
    token = open_session(client, project)["Authorization"].removeprefix("Bearer ")
    body, _, signature = token.partition(".")
    fields = json.loads(_unb64(body))
    fields[0] += 1  # claim to be another worker, keeping the signature
    forged = f"{_b64(json.dumps(fields).encode())}.{signature}"
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    foreign = issue_session(
        "not-this-projects-secret",
        WorkerSession(fields[0] - 1, project.uid, "k", "prolific", "patch", time.time() + 60),
    )
    for bad in (forged, flipped, foreign, "no-dot-at-all", "é.é"):
        response = client.get("/api/v1/tasks/next", headers={"Authorization": f"Bearer {bad}".encode("latin-1")})
        assert response.status_code == 401, (bad, response.status_code)


def test_requester_routes_and_dashboard_need_the_api_key_even_odd_ones(served):
    project, client = served
    name = project.config.name
    for url in (
        f"/api/v1/projects/{name}/progress",
        f"/api/v1/projects/{name}/dashboard",
        f"/api/v1/projects/{name}/answers.csv",
    ):
        assert client.get(url).status_code == 401
        # Non-ASCII must be refused like any wrong key (compare_digest on str would raise: a 500).
        for wrong in ("wrong", "é" * 20, project.config.server.effective_api_key() + "x"):
            assert client.get(url, headers={"X-API-Key": wrong.encode("latin-1")}).status_code == 401
        assert client.get(url, headers=api_key(project)).status_code == 200
    assert client.get(f"/admin/{name}").status_code == 401
    assert client.get(f"/admin/{name}", params={"key": "é"}).status_code == 401
    assert (
        client.post(f"/api/v1/projects/{name}/sessions", json={"platform": "simulated", "worker_id": "s"}).status_code
        == 401
    )


# -- image links ----------------------------------------------------------------------------------


def test_an_image_link_works_only_for_its_worker_and_task(served):
    project, client = served
    alice, bob = open_session(client, project, "alice"), open_session(client, project, "bob")
    task = client.get("/api/v1/tasks/next", headers=alice).json()
    assert client.get(task["image_url"]).status_code == 200
    bob_worker = int(client.get("/api/v1/tasks/next", headers=bob).json()["image_url"].split("w=")[1].split("&")[0])
    alice_worker = int(task["image_url"].split("w=")[1].split("&")[0])
    signature = task["image_url"].split("s=")[1]
    # Alice's signature on Bob's id, on another task, or altered: all refused.
    assert (
        client.get(f"/api/v1/tasks/{task['task_id']}/image", params={"w": bob_worker, "s": signature}).status_code
        == 403
    )
    other_task = int(task["task_id"]) + 1
    assert (
        client.get(f"/api/v1/tasks/{other_task}/image", params={"w": alice_worker, "s": signature}).status_code == 403
    )
    assert (
        client.get(
            f"/api/v1/tasks/{task['task_id']}/image", params={"w": alice_worker, "s": signature[:-1] + "é"}
        ).status_code
        == 403
    )
    # A validly signed link to a task this project does not have: no image.
    secret = project.config.server.session_secret
    assert (
        client.get(
            "/api/v1/tasks/999999/image",
            params={"w": alice_worker, "s": image_signature(secret, project.uid, 999999, alice_worker)},
        ).status_code
        == 404
    )
    assert client.get(task["image_url"] + "x").status_code in (403, 422)
    assert client.get(task["image_url"].replace("part=context", "") + "&part=../../crowdpatch.toml").status_code == 422


def test_images_of_another_project_on_the_same_database_are_not_served(make_project, tmp_path):
    first = make_project(n_images=2, size=64, configure=quiet, name="first")

    def same_store_and_secret(config) -> None:
        quiet(config)
        config.db_url = first.config.resolved_db_url(first.directory)
        config.server.session_secret = first.config.server.session_secret

    second = make_project(n_images=2, size=64, configure=same_store_and_secret, name="second")
    with TestClient(create_app(first)) as client:
        auth = open_session(client, first)
        task = client.get("/api/v1/tasks/next", headers=auth).json()
        assert client.get(task["image_url"]).status_code == 200
    with TestClient(create_app(second)) as client:
        # Same secret, same database: the link was signed for the first project, not this one.
        assert client.get(task["image_url"]).status_code == 403
        # Signed for this project, yet naming the first project's task: still not served.
        worker = int(task["image_url"].split("w=")[1].split("&")[0])
        signature = image_signature(second.config.server.session_secret, second.uid, int(task["task_id"]), worker)
        image = client.get(f"/api/v1/tasks/{task['task_id']}/image", params={"w": worker, "s": signature})
        assert image.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/static/../crowdpatch.toml",
        "/static/%2e%2e/crowdpatch.toml",
        "/static/..%2fcrowdpatch.toml",
        "/static/%2e%2e%2f%2e%2e%2fcrowdpatch.toml",
        "/static/....//crowdpatch.toml",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/api/v1/tasks/..%2f..%2fcrowdpatch.toml/image?w=1&s=x",
    ],
)
def test_no_url_reads_a_file_outside_the_static_folder(served, path):
    project, client = served
    response = client.get(path)
    assert response.status_code in (404, 422), (path, response.status_code)
    assert project.config.server.session_secret not in response.text and "root:" not in response.text


# -- request bodies ------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_by_length_and_when_streamed(served):
    project, client = served
    project.config.server.max_body_bytes = 2048
    auth = open_session(client, project)
    task = client.get("/api/v1/tasks/next", headers=auth).json()
    big = json.dumps({"task_id": task["task_id"], "answer": "yes", "client_id": "x" * 4000, "client_ms": 5}).encode()
    declared = client.post("/api/v1/answers", content=big, headers={**auth, "Content-Type": "application/json"})
    assert declared.status_code == 413 and "2048 bytes" in declared.json()["detail"]

    def chunks():  # no Content-Length: the middleware must count what arrives
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    streamed = client.post("/api/v1/answers", content=chunks(), headers={**auth, "Content-Type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["detail"] == declared.json()["detail"]
    small = json.dumps({"task_id": task["task_id"], "answer": "yes", "client_id": "c-1", "client_ms": 5}).encode()
    ok = client.post(
        "/api/v1/answers", content=iter([small[:10], small[10:]]), headers={**auth, "Content-Type": "application/json"}
    )
    assert ok.status_code == 201, ok.text


def polygon_task(client, project) -> tuple[dict, dict]:
    key = api_key(project)
    assert client.post(f"/api/v1/projects/{project.config.name}/polygon-tasks", headers=key).status_code == 200
    auth = open_session(client, project, "drawer", mode="polygon")
    task = client.get("/api/v1/tasks/next", headers=auth).json()
    assert task["kind"] == "polygon"
    return auth, task


def test_polygons_are_capped_finite_and_inside_the_image(served):
    project, client = served
    auth, task = polygon_task(client, project)
    w, h = task["image_width"], task["image_height"]

    def post(polygon, client_id):
        body = {"task_id": task["task_id"], "answer": {"polygon": polygon}, "client_id": client_id, "client_ms": 10}
        return client.post("/api/v1/answers", json=body, headers=auth)

    ring = [
        [
            w / 2 + 10 * math.cos(2 * math.pi * i / MAX_POLYGON_POINTS),
            h / 2 + 10 * math.sin(2 * math.pi * i / MAX_POLYGON_POINTS),
        ]
        for i in range(MAX_POLYGON_POINTS + 1)
    ]
    assert post(ring, "too-many").status_code == 422
    assert post([[1, 1], [2, 2, 2], [3, 1]], "three-coordinates").status_code == 422
    assert post([[1, 1], [2], [3, 1]], "one-coordinate").status_code == 422
    assert post([[1, 1], [w + 5, 2], [3, 1]], "outside").status_code == 422
    nan = (
        f'{{"task_id": "{task["task_id"]}", "answer": {{"polygon": [[1, 1], [NaN, 2], [3, 1]]}}, '
        '"client_id": "nan", "client_ms": 10}'
    )
    assert (
        client.post("/api/v1/answers", content=nan, headers={**auth, "Content-Type": "application/json"}).status_code
        == 422
    )
    assert post(ring[:MAX_POLYGON_POINTS], "at-the-cap").status_code == 201


def test_out_of_range_ids_and_foreign_submit_urls_are_422_not_500(served):
    project, client = served
    auth = open_session(client, project)
    key = api_key(project)
    name = project.config.name
    assert client.get(f"/api/v1/tasks/{2**70}/image", params={"w": 1, "s": "x"}).status_code == 422
    assert client.get(f"/api/v1/projects/{name}/masks/{2**70}.png", headers=key).status_code == 422
    assert client.get("/api/v1/tasks/next", params={"exclude": "1," * 500}, headers=auth).status_code == 422
    assert (
        client.post(
            "/api/v1/answers",
            json={"task_id": "1", "answer": {"cells": [-1]}, "client_id": "c", "client_ms": 1},
            headers=auth,
        ).status_code
        == 422
    )
    sessions = f"/api/v1/projects/{name}/sessions"
    for submit_to in ("javascript:alert(1)", "https://evil.example", "https://www.mturk.com.evil.example"):
        body = {"platform": "mturk", "worker_id": "m", "assignment_id": "A", "hit_id": "H", "turk_submit_to": submit_to}
        assert client.post(sessions, json=body).status_code == 422, submit_to
    body = {
        "platform": "mturk",
        "worker_id": "m",
        "assignment_id": "A",
        "hit_id": "H",
        "turk_submit_to": "https://workersandbox.mturk.com",
    }
    assert client.post(sessions, json=body).status_code == 201


# -- rate limits --------------------------------------------------------------------------------


def test_token_buckets_refill_at_their_rate():
    now = [0.0]
    buckets = TokenBuckets(clock=lambda: now[0])
    assert [buckets.take("w", rate=2.0, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("w", rate=2.0, burst=3) == pytest.approx(0.5)
    assert buckets.take("other", rate=2.0, burst=3) == 0.0
    now[0] = 0.5
    assert buckets.take("w", rate=2.0, burst=3) == 0.0
    now[0] = 100.0  # refills to the burst, not beyond it
    assert [buckets.take("w", rate=2.0, burst=3) for _ in range(4)][-1] > 0


def test_a_worker_past_its_rate_gets_429_with_retry_after_and_others_do_not(served):
    project, client = served
    server = project.config.server
    alice, bob = open_session(client, project, "alice"), open_session(client, project, "bob")
    # One token per 100 s: whatever a slow machine does between requests, the burst decides.
    server.rate_limit_worker_per_second, server.rate_limit_worker_burst = 0.01, 3
    statuses = [client.get("/api/v1/tasks/next", headers=alice).status_code for _ in range(4)]
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
    limited = client.get("/api/v1/tasks/next", headers=alice)
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 100
    assert "too many requests from this worker session" in limited.json()["detail"]
    assert client.get("/api/v1/tasks/next", headers=bob).status_code == 200
    assert client.get(f"/api/v1/projects/{project.config.name}/progress", headers=api_key(project)).status_code == 200
    server.rate_limit_worker_per_second = 0  # 0 turns the limit off (the load benchmark)
    assert client.get("/api/v1/tasks/next", headers=alice).status_code == 200


def test_an_address_without_credentials_is_limited_and_simulated_workers_are_not(served):
    project, client = served
    server = project.config.server
    simulated = open_session(client, project, "sim", platform="simulated", headers=api_key(project))
    server.rate_limit_ip_per_second, server.rate_limit_ip_burst = 0.01, 2
    server.rate_limit_worker_per_second, server.rate_limit_worker_burst = 0.01, 2
    statuses = [client.get("/openapi.json").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert "this address" in client.get("/openapi.json").json()["detail"]
    # Wrong keys count against the address: API keys cannot be guessed at full speed.
    assert (
        client.get(f"/api/v1/projects/{project.config.name}/progress", headers={"X-API-Key": "guess"}).status_code
        == 429
    )
    assert [client.get("/api/v1/tasks/next", headers=simulated).status_code for _ in range(5)] == [200] * 5


def test_wrong_keys_are_limited_per_address_whatever_token_comes_with_them(served):
    project, client = served
    server = project.config.server
    progress = f"/api/v1/projects/{project.config.name}/progress"
    tokens = [open_session(client, project, f"guesser-{k}") for k in range(3)]
    simulated = open_session(client, project, "sim", platform="simulated", headers=api_key(project))
    server.rate_limit_ip_per_second, server.rate_limit_ip_burst = 0.01, 4
    server.rate_limit_worker_per_second = 0  # no worker limit: only the address's can stop the guesses
    guesses = [client.get(progress, headers={**tokens[k % 3], "X-API-Key": f"guess-{k}"}).status_code for k in range(5)]
    assert guesses == [401] * 4 + [429]
    for credential in (*tokens, simulated):  # another token, or a simulated worker's, buys no more guesses
        limited = client.get(progress, headers={**credential, "X-API-Key": "guess"})
        assert limited.status_code == 429 and "this address" in limited.json()["detail"]
    limited = client.get(progress, params={"key": "guess"}, headers=tokens[0])
    assert limited.status_code == 429
    # The same tokens without a key are their workers' own, and the right key is never limited.
    assert all(client.get("/api/v1/tasks/next", headers=token).status_code == 200 for token in tokens)
    assert client.get(progress, headers={**tokens[0], **api_key(project)}).status_code == 200


# -- browsers: CORS, headers, cookies ----------------------------------------------------------


def test_no_cors_by_default_and_only_configured_origins_when_set(make_project):
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    project = make_project(n_images=2, size=64, configure=quiet)
    with TestClient(create_app(project)) as client:
        response = client.options("/api/v1/answers", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        assert (
            "access-control-allow-origin"
            not in client.get("/openapi.json", headers={"Origin": "https://evil.example"}).headers
        )
    project.config.server.cors_origins = ["https://study.example"]
    with TestClient(create_app(project)) as client:
        allowed = client.options("/api/v1/answers", headers={**preflight, "Origin": "https://study.example"})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://study.example"
        assert "access-control-allow-credentials" not in allowed.headers
        assert "access-control-allow-origin" not in client.options("/api/v1/answers", headers=preflight).headers


def test_responses_carry_safe_headers_and_no_cookies(served):
    project, client = served
    name = project.config.name
    auth = open_session(client, project)
    task = client.get("/api/v1/tasks/next", headers=auth)
    responses = {
        "worker page": client.get(f"/w/{name}"),
        "dashboard": client.get(f"/admin/{name}", params={"key": project.config.server.effective_api_key()}),
        "task": task,
        "image": client.get(task.json()["image_url"]),
        "answer": client.post(
            "/api/v1/answers",
            json={"task_id": task.json()["task_id"], "answer": "yes", "client_id": "k", "client_ms": 9},
            headers=auth,
        ),
        "error": client.get("/api/v1/tasks/next"),
    }
    for what, response in responses.items():
        assert response.status_code < 500, what
        assert "set-cookie" not in response.headers, what
        assert response.headers["x-content-type-options"] == "nosniff", what
        assert response.headers["referrer-policy"] == "no-referrer", what
    assert "https://*.mturk.com" in responses["worker page"].headers["content-security-policy"]
    assert responses["dashboard"].headers["content-security-policy"] == "frame-ancestors 'none'"
    assert responses["task"].headers["cache-control"] == "no-store"
    assert responses["image"].headers["cache-control"].startswith("private")
