"""E2B's control-plane routes beyond one sandbox's life: sandbox logs (v1 and v2), secrets
(sealed at rest, filled into a create's envVars), refreshes, metrics of many sandboxes,
template lookups and deletes, and the clear refusal of routes Warren does not serve."""

import os
import ssl
import uuid

import httpx
import pytest

from e2b import Sandbox, Template

from conftest import sdk_at_least, wait_for


def api() -> httpx.Client:
    """The control-plane API as the SDK reaches it, with the same key."""
    verify = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None)
    return httpx.Client(
        base_url=os.environ["E2B_API_URL"],
        headers={"X-API-KEY": os.environ["E2B_API_KEY"]},
        verify=verify,
        timeout=30,
    )


def test_sandbox_logs_v1_and_v2(sandbox):
    sid = sandbox.sandbox_id
    with api() as http:
        # Read until the log stops growing (the agent's own lines come in after `running`).
        seen = {"last": None}

        def settled():
            now = http.get(f"/v2/sandboxes/{sid}/logs").json().get("logs")
            same = now and now == seen["last"]
            seen["last"] = now
            return now if same else None

        v2 = wait_for(settled, 10, interval=0.5)
        assert v2, "the log holds at least the sandbox's lifecycle events"
        for e in v2:
            assert set(e) >= {"timestamp", "level", "message", "fields"}
            assert e["level"] in ("debug", "info", "warn", "error")
            assert e["fields"]["stream"] in ("stdout", "stderr", "event")
        # Oldest first by default; backward is newest first.
        back = http.get(f"/v2/sandboxes/{sid}/logs", params={"direction": "backward"}).json()["logs"]
        assert [e["message"] for e in back] == [e["message"] for e in reversed(v2)]
        word = v2[0]["message"].split()[0]
        found = http.get(f"/v2/sandboxes/{sid}/logs", params={"search": word}).json()["logs"]
        assert found and all(word in e["message"] for e in found)
        assert http.get(f"/v2/sandboxes/{sid}/logs", params={"limit": 1}).json()["logs"] == v2[:1]
        # From a time on (ms): nothing after the future.
        later = http.get(f"/v2/sandboxes/{sid}/logs", params={"cursor": 32503680000000}).json()
        assert later["logs"] == []

        v1 = http.get(f"/sandboxes/{sid}/logs").json()
        assert [line["line"] for line in v1["logs"]] == [e["message"] for e in v2]
        assert len(v1["logEntries"]) == len(v1["logs"])

        bad = http.get(f"/v2/sandboxes/{sid}/logs", params={"limit": 0})
        assert bad.status_code == 400 and bad.json()["code"] == 400
        missing = http.get("/v2/sandboxes/nosuchsandbox0000/logs")
        assert missing.status_code == 404 and missing.json()["code"] == 404


@sdk_at_least("2.63")
def test_secrets_are_write_only_and_fill_env_vars(sandbox_factory):
    from e2b import Secret

    name = f"token-{uuid.uuid4().hex[:8]}"
    info = Secret.create(name, "s3cr3t-value", metadata={"team": "qa"})
    try:
        assert info.name == name and info.version == 1 and info.metadata == {"team": "qa"}
        assert Secret.get_info(name).secret_id == info.secret_id
        assert Secret.get_info(info.secret_id).name == name
        assert Secret.exists(name) is True
        names = []
        pages = Secret.list(limit=1)
        while pages.has_next:
            names.extend(s.name for s in pages.next_items())
        assert name in names
        # No read surface returns the value.
        with api() as http:
            raw = http.get(f"/secrets/{info.secret_id}").text + http.get("/secrets").text
        assert "s3cr3t-value" not in raw

        sbx = sandbox_factory(envs={"TOKEN": Secret.fill(name), "PLAIN": "x"})
        assert sbx.commands.run("echo -n $TOKEN").stdout == "s3cr3t-value"

        updated = Secret.update(name, "second-value")
        assert updated.version == 2 and updated.metadata == {"team": "qa"}
        sbx2 = sandbox_factory(envs={"TOKEN": f"Bearer {Secret.fill(name)}"})
        assert sbx2.commands.run("echo -n $TOKEN").stdout == "Bearer second-value"
    finally:
        assert Secret.destroy(name) is True
    assert Secret.destroy(name) is False
    assert Secret.exists(name) is False
    with pytest.raises(Exception) as err:
        Sandbox.create(envs={"TOKEN": Secret.fill(name)})
    assert "not found" in str(err.value)


def test_refresh_and_metrics_of_many(sandbox_factory):
    a, b = sandbox_factory(timeout=30), sandbox_factory(timeout=30)
    with api() as http:
        r = http.post(f"/sandboxes/{a.sandbox_id}/refreshes", json={"duration": 600})
        assert r.status_code == 204, r.text
        end = a.get_info().end_at
        assert (end - b.get_info().end_at).total_seconds() > 500

        def both():
            got = http.get("/sandboxes/metrics", params={"sandbox_ids": f"{a.sandbox_id},{b.sandbox_id}"})
            assert got.status_code == 200, got.text
            return got.json()["sandboxes"] if len(got.json()["sandboxes"]) == 2 else None

        metrics = wait_for(both, 15)
        assert metrics, "metrics of both sandboxes"
        for m in metrics.values():
            assert m["cpuCount"] >= 1 and m["memTotal"] > 0


def test_templates_are_images_and_snapshots(sandbox):
    assert Template.exists("base") is True
    assert Template.exists(f"no-such-{uuid.uuid4().hex[:6]}") is False
    snap = sandbox.create_snapshot()
    assert Template.exists(snap.snapshot_id) is True
    assert Sandbox.delete_snapshot(snap.snapshot_id) is True
    assert Sandbox.delete_snapshot(snap.snapshot_id) is False


def test_routes_warren_does_not_serve_answer_e2b_errors():
    with api() as http:
        for method, path in (
            ("GET", "/templates"),
            ("GET", "/templates/t1/builds/b1/logs"),
            ("GET", "/default-templates"),
        ):
            r = http.request(method, path, json={})
            assert r.status_code == 501, (method, path, r.status_code, r.text)
            body = r.json()
            assert body["code"] == 501 and "not supported by Warren" in body["message"], body


def test_template_routes_refuse_bad_input_in_e2b_shape():
    with api() as http:
        for method, path, body, status in (
            ("POST", "/v3/templates", {}, 400),
            ("POST", "/v3/templates", {"name": "Bad Name!"}, 400),
            ("POST", "/templates/tags", {"target": "x"}, 400),
            ("POST", "/v2/templates/t1/builds/b1", {"fromImage": "base"}, 404),
            ("GET", "/templates/t1/builds/b1/status", None, 404),
            ("GET", "/templates/t1/files/not%2Fa%2Fhash", None, 400),
        ):
            r = http.request(method, path, json=body)
            assert r.status_code == status, (method, path, r.status_code, r.text)
            assert r.json()["code"] == status, r.text
        r = http.put("/e2b-template-files/not-a-token", content=b"x")
        assert r.status_code == 403, r.text


def test_an_upload_url_is_good_once():
    with api() as http:
        r = http.get(f"/templates/t1/files/{uuid.uuid4().hex}")
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["present"] is False
        url = httpx.URL(body["url"])
        first = http.put(url.raw_path.decode(), content=b"not really a tar")
        assert first.status_code == 200, first.text
        again = http.put(url.raw_path.decode(), content=b"something else")
        assert again.status_code == 403, again.text
