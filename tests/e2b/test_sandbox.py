"""Sandbox lifecycle through the control-plane API (`/sandboxes`, `/v2/sandboxes`, ...)."""

import time
import uuid
from datetime import datetime, timedelta, timezone

import e2b
import pytest
from packaging.version import Version

from e2b import (
    AuthenticationException,
    Sandbox,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)

from conftest import (
    SandboxNotRunningException,
    get_once_up,
    get_via_host,
    kill_quietly,
    sdk_at_least,
    wait_for,
)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _assert_close(actual: datetime, expected: datetime, tolerance_s: float, what: str):
    delta = abs((actual - expected).total_seconds())
    assert delta <= tolerance_s, f"{what}: {actual.isoformat()} is {delta:.1f}s from {expected.isoformat()}"


def test_create_with_metadata_envs_timeout_and_get_info(sandbox_factory):
    tag = uuid.uuid4().hex
    before = _now()
    sbx = sandbox_factory(
        metadata={"suite": "warren-e2b", "tag": tag},
        envs={"E2B_TEST_VAR": "from-create", "SECOND_VAR": "two words"},
        timeout=120,
    )
    assert sbx.sandbox_id

    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id
    assert isinstance(info.template_id, str) and info.template_id
    # E2B reports the template's ID and its alias (`name`); the default template is `base`.
    assert "base" in (info.template_id, info.name), (info.template_id, info.name)
    assert info.metadata == {"suite": "warren-e2b", "tag": tag}
    assert info.state == SandboxState.RUNNING
    assert info.started_at < info.end_at
    _assert_close(info.started_at, before, 10, "started_at")
    assert abs((info.end_at - info.started_at).total_seconds() - 120) <= 5, (
        info.started_at,
        info.end_at,
    )
    assert info.cpu_count >= 1
    assert info.memory_mb > 0
    assert Version(info.envd_version) >= Version("0.1.0")

    # Variables given at create are the sandbox's environment for every command.
    out = sbx.commands.run('printf "%s|%s" "$E2B_TEST_VAR" "$SECOND_VAR"')
    assert out.stdout == "from-create|two words"
    # A command's own envs win over the sandbox's.
    out = sbx.commands.run('printf "%s" "$E2B_TEST_VAR"', envs={"E2B_TEST_VAR": "per-command"})
    assert out.stdout == "per-command"


def test_create_envs_reach_commands_whatever_their_name(sandbox_factory):
    # The sandbox's environment is the user's: E2B passes any name through. Code that itself
    # talks to a Warren server from inside a sandbox plausibly sets these two.
    envs = {"WARREN_URL": "http://warren.example:8080", "WARREN_API_KEY": "wk_inner", "PLAIN": "plain"}
    sbx = sandbox_factory(envs=envs)
    out = sbx.commands.run('printf "%s|%s|%s" "$WARREN_URL" "$WARREN_API_KEY" "$PLAIN"')
    assert out.stdout == "http://warren.example:8080|wk_inner|plain"


@sdk_at_least("2.61")
def test_create_with_idempotency_key_makes_one_sandbox(sandbox_factory):
    key = str(uuid.uuid4())
    tag = uuid.uuid4().hex
    first = sandbox_factory(idempotency_key=key, metadata={"idem-tag": tag})
    again = sandbox_factory(idempotency_key=key, metadata={"idem-tag": tag})
    assert again.sandbox_id == first.sandbox_id
    assert again.commands.run("echo same").stdout == "same\n"
    listed = Sandbox.list(query=SandboxQuery(metadata={"idem-tag": tag})).next_items()
    assert [s.sandbox_id for s in listed] == [first.sandbox_id]


def test_default_timeout_is_300s(sandbox):
    # The SDK sends no `timeout`; the API's documented default is 300 seconds.
    info = sandbox.get_info()
    assert abs((info.end_at - info.started_at).total_seconds() - 300) <= 5, (
        info.started_at,
        info.end_at,
    )


def test_connect_by_id(sandbox):
    sandbox.files.write("/home/user/connect-marker.txt", "written before connect")

    other = Sandbox.connect(sandbox.sandbox_id)
    assert other.sandbox_id == sandbox.sandbox_id
    assert other.files.read("/home/user/connect-marker.txt") == "written before connect"
    assert other.commands.run("echo via-connect").stdout == "via-connect\n"
    assert other.is_running()


def test_connect_timeout_only_extends(sandbox_factory):
    sbx = sandbox_factory(timeout=60)
    Sandbox.connect(sbx.sandbox_id, timeout=600)
    end_at = Sandbox.get_info(sbx.sandbox_id).end_at
    _assert_close(end_at, _now() + timedelta(seconds=600), 10, "end_at after connect(timeout=600)")

    # "For running sandboxes, the timeout will update only if the new timeout is longer."
    Sandbox.connect(sbx.sandbox_id, timeout=30)
    assert Sandbox.get_info(sbx.sandbox_id).end_at == end_at


def test_wrong_api_key_is_refused():
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="e2b_" + "0" * 40)
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key="e2b_" + "0" * 40).next_items()


def test_connect_unknown_sandbox_raises_not_found():
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect("nosuchsandbox" + uuid.uuid4().hex[:8])


def test_get_info_unknown_sandbox_raises_not_found():
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info("nosuchsandbox" + uuid.uuid4().hex[:8])


def test_kill_then_kill_again_returns_false(sandbox_factory):
    sbx = sandbox_factory()
    assert sbx.is_running() is True

    assert sbx.kill() is True
    assert Sandbox.kill(sbx.sandbox_id) is False
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sbx.sandbox_id)


def test_is_running_false_after_kill(sandbox_factory):
    sbx = sandbox_factory()
    assert sbx.is_running() is True
    assert sbx.kill() is True
    # E2B's proxy answers 502 "... was not found" for a sandbox that is gone, which the SDK
    # reads as "not running" (any other answer raises).
    assert sbx.is_running() is False


def test_command_on_killed_sandbox_raises_not_running(sandbox_factory):
    sbx = sandbox_factory()
    assert sbx.kill() is True
    with pytest.raises(SandboxNotRunningException):
        sbx.commands.run("echo should-not-run", timeout=20)


def test_list_pages_through_metadata_filter(sandbox_factory):
    tag = uuid.uuid4().hex
    created = {sandbox_factory(metadata={"list-tag": tag, "idx": str(i)}).sandbox_id for i in range(3)}

    paginator = Sandbox.list(query=SandboxQuery(metadata={"list-tag": tag}), limit=2)
    assert paginator.has_next

    first = paginator.next_items()
    assert len(first) == 2, [s.sandbox_id for s in first]
    assert paginator.has_next, "3 matching sandboxes with limit=2 must leave a next page"

    seen = list(first)
    pages = 1
    while paginator.has_next:
        page = paginator.next_items()
        assert len(page) <= 2
        seen.extend(page)
        pages += 1
        assert pages <= 3, "paging did not end"

    ids = [s.sandbox_id for s in seen]
    assert len(ids) == len(set(ids)), f"a sandbox was listed twice: {ids}"
    assert set(ids) == created

    for info in seen:
        assert info.state == SandboxState.RUNNING
        assert info.metadata["list-tag"] == tag
        assert info.metadata == {"list-tag": tag, "idx": info.metadata["idx"]}
        assert info.started_at < info.end_at
        assert "base" in (info.template_id, info.name)


def test_list_metadata_filter_with_special_characters(sandbox_factory):
    tag = uuid.uuid4().hex
    odd = "a b&c=d/é?%"
    wanted = sandbox_factory(metadata={"tag": tag, "odd": odd})
    sandbox_factory(metadata={"tag": tag, "odd": "a b"})

    paginator = Sandbox.list(query=SandboxQuery(metadata={"tag": tag, "odd": odd}))
    found = []
    while paginator.has_next:
        found.extend(paginator.next_items())
    assert [s.sandbox_id for s in found] == [wanted.sandbox_id]
    assert found[0].metadata == {"tag": tag, "odd": odd}


def test_list_state_filter_and_killed_sandbox_leaves_list(sandbox_factory):
    tag = uuid.uuid4().hex
    ids = [sandbox_factory(metadata={"state-tag": tag}).sandbox_id for _ in range(2)]

    def listed(states):
        paginator = Sandbox.list(query=SandboxQuery(metadata={"state-tag": tag}, state=states))
        items = []
        while paginator.has_next:
            items.extend(paginator.next_items())
        return items

    running = listed([SandboxState.RUNNING])
    assert {s.sandbox_id for s in running} == set(ids)
    assert all(s.state == SandboxState.RUNNING for s in running)
    assert listed([SandboxState.PAUSED]) == []
    assert {s.sandbox_id for s in listed([SandboxState.RUNNING, SandboxState.PAUSED])} == set(ids)

    assert Sandbox.kill(ids[0]) is True
    assert {s.sandbox_id for s in listed([SandboxState.RUNNING])} == {ids[1]}


def test_set_timeout_moves_end_at(sandbox):
    sandbox.set_timeout(600)
    info = sandbox.get_info()
    _assert_close(info.end_at, _now() + timedelta(seconds=600), 10, "end_at after set_timeout(600)")

    # A timeout can also be shortened.
    sandbox.set_timeout(90)
    info = sandbox.get_info()
    _assert_close(info.end_at, _now() + timedelta(seconds=90), 10, "end_at after set_timeout(90)")


def test_set_timeout_unknown_sandbox_raises_not_found():
    with pytest.raises(SandboxNotFoundException):
        Sandbox.set_timeout("nosuchsandbox" + uuid.uuid4().hex[:8], 60)


def test_sandbox_is_gone_after_its_timeout(sandbox_factory):
    sbx = sandbox_factory(timeout=2)
    assert sbx.is_running()

    def gone():
        try:
            Sandbox.get_info(sbx.sandbox_id)
            return False
        except SandboxNotFoundException:
            return True

    assert wait_for(gone, timeout=20, interval=0.5), "sandbox still there 20s after a 2s timeout"
    assert sbx.is_running() is False


def test_get_metrics(sandbox):
    # E2B samples metrics periodically, so the first sample may take a moment to appear.
    metrics = wait_for(sandbox.get_metrics, timeout=15, interval=0.5)
    assert metrics, "get_metrics() returned no sample within 15s"
    m = metrics[-1]
    assert m.cpu_count >= 1
    assert m.mem_total > 0
    assert 0 < m.mem_used <= m.mem_total
    assert 0 <= m.cpu_used_pct <= 100 * m.cpu_count
    assert m.disk_total > 0 and 0 <= m.disk_used <= m.disk_total
    _assert_close(m.timestamp, _now(), 60, "metric timestamp")

    # A busy core shows up in cpu_used_pct.
    sandbox.commands.run("timeout 8 sh -c 'while :; do :; done'", background=True)

    def busy():
        return any(x.cpu_used_pct >= 50 for x in sandbox.get_metrics())

    assert wait_for(busy, timeout=7, interval=0.5), f"cpu_used_pct stayed low: {sandbox.get_metrics()}"


def test_pause_then_connect_brings_back_processes_and_files(sandbox):
    sandbox.files.write("/tmp/kept", "before the pause")
    sleeper = sandbox.commands.run("sleep 600", background=True)
    assert sandbox.pause() is True
    assert sandbox.get_info().state == SandboxState.PAUSED
    assert sandbox.is_running() is False
    # A second pause finds it paused already: the SDK reads that 409 as False.
    assert Sandbox.pause(sandbox.sandbox_id) is False
    same = Sandbox.connect(sandbox.sandbox_id)
    assert same.get_info().state == SandboxState.RUNNING
    assert same.files.read("/tmp/kept") == "before the pause"
    # The very process, not a new one: a resume restores, it does not reboot.
    assert sleeper.pid in [p.pid for p in same.commands.list()]
    assert same.commands.run("echo still-here").stdout == "still-here\n"


def test_get_host_format(sandbox):
    host = sandbox.get_host(8000)
    assert host == f"8000-{sandbox.sandbox_id}.{sandbox.sandbox_domain}"
    # The create answer's `domain` names Warren's (the SDK falls back to E2B_DOMAIN, then to
    # E2B's own "e2b.app", which would route nowhere); the next test checks that it routes.
    assert sandbox.sandbox_domain and sandbox.sandbox_domain != "e2b.app"


def _serve_marker(sbx, port: int) -> str:
    """Start python's http.server on `port` in the sandbox, serving a random marker."""
    marker = uuid.uuid4().hex
    sbx.files.write("/home/user/www/index.html", marker)
    sbx.commands.run(
        f"python3 -m http.server {port} --bind 0.0.0.0",
        background=True,
        cwd="/home/user/www",
        timeout=0,
    )
    return marker


def test_get_host_reaches_a_port_in_the_sandbox(sandbox):
    marker = _serve_marker(sandbox, 8000)
    host = sandbox.get_host(8000)
    # Ports are public by default on E2B: no credential needed.
    r, last = get_once_up(host)
    assert r is not None, f"no 200 from port 8000 through Host: {host}; last answer: {last}"
    assert r.text == marker


def test_private_ports_need_the_traffic_access_token(sandbox_factory):
    sbx = sandbox_factory(network={"allow_public_traffic": False})
    assert sbx.traffic_access_token, "a sandbox with private ports gets a traffic access token"
    marker = _serve_marker(sbx, 8001)
    host = sbx.get_host(8001)

    token = {"e2b-traffic-access-token": sbx.traffic_access_token}
    r, last = get_once_up(host, headers=token)
    assert r is not None, f"no 200 with the traffic token through Host: {host}; last answer: {last}"
    assert r.text == marker

    for headers in ({}, {"e2b-traffic-access-token": "wrong-" + sbx.traffic_access_token}):
        r = get_via_host(host, headers)
        # E2B's proxy answers 403 to a missing token as to a wrong one.
        assert r.status_code == 403, (headers, r.status_code, r.text[:300])
        assert marker not in r.text


def test_lifecycle_pause_at_timeout_then_auto_resume_on_use():
    sbx = Sandbox.create(timeout=3, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        sbx.files.write("/home/user/kept", "across the pause")
        sleeper = sbx.commands.run("sleep 600", background=True)
        assert wait_for(lambda: sbx.get_info().state == SandboxState.PAUSED, timeout=30)
        # A request resumes it and then goes through.
        assert sbx.files.read("/home/user/kept") == "across the pause"
        assert sbx.get_info().state == SandboxState.RUNNING
        assert sleeper.pid in [p.pid for p in sbx.commands.list()]
    finally:
        kill_quietly(sbx.sandbox_id)


def test_a_shortened_timeout_ends_the_sandbox_on_time(sandbox_factory):
    sbx = sandbox_factory()
    sbx.set_timeout(5)
    # E2B's own test: 6 s later the sandbox is gone (a deadline is kept to the moment, not to
    # the next reconciler pass).
    time.sleep(6)
    assert sbx.is_running(request_timeout=5) is False


def test_shorten_then_lengthen(sandbox_factory):
    sbx = sandbox_factory()
    sbx.set_timeout(5)
    time.sleep(1)
    sbx.set_timeout(10)
    time.sleep(6)
    assert sbx.is_running() is True
    _assert_close(sbx.get_info().end_at, _now() + timedelta(seconds=3), 2, "end_at")


def test_a_command_streaming_when_its_sandbox_is_killed_ends_with_e2b_error(sandbox_factory):
    sbx = sandbox_factory()
    cmd = sbx.commands.run("sleep 60", background=True)
    sbx.kill()
    with pytest.raises(e2b.TimeoutException) as err:
        cmd.wait()
    assert "sandbox was killed or reached its end of life" in str(err.value)


def test_timeout_zero_ends_it_now_and_connect_waits_for_the_pause(sandbox_factory):
    # E2B's idiom for "pause now": a timeout of 0 with pause as the timeout action. A connect
    # that comes while the pause runs waits for it and resumes the same sandbox.
    sbx = sandbox_factory(timeout=60, lifecycle={"on_timeout": "pause"})
    boot = sbx.files.read("/proc/sys/kernel/random/boot_id").strip()
    sbx.set_timeout(0)
    assert wait_for(lambda: not sbx.is_running(), 30)
    again = sbx.connect()
    assert again.sandbox_id == sbx.sandbox_id
    assert again.files.read("/proc/sys/kernel/random/boot_id").strip() == boot
