"""`sandbox.commands`: envd's process service (Connect RPC) through Warren's proxy."""

import threading
import time

import pytest

from e2b import CommandExitException, TimeoutException

from conftest import wait_for


def test_run_stdout_stderr_exit_code(shared_sandbox):
    result = shared_sandbox.commands.run("echo out; echo err >&2")
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.exit_code == 0
    assert result.error is None


def test_large_output_is_complete(shared_sandbox):
    result = shared_sandbox.commands.run(
        "head -c 5000000 /dev/zero | tr '\\0' a; seq 1 20000 >&2"
    )
    assert len(result.stdout) == 5_000_000
    assert set(result.stdout) == {"a"}
    assert result.stderr == "".join(f"{i}\n" for i in range(1, 20001))


def test_non_zero_exit_raises_with_exit_code(shared_sandbox):
    with pytest.raises(CommandExitException) as info:
        shared_sandbox.commands.run("echo partial; echo broken >&2; exit 7")
    exc = info.value
    assert exc.exit_code == 7
    assert exc.error == "exit status 7"  # envd reports Go's ProcessState text
    assert exc.stdout == "partial\n"
    assert exc.stderr == "broken\n"


def test_envs_and_cwd(shared_sandbox):
    result = shared_sandbox.commands.run(
        'printf "%s|%s" "$MY_VAR" "$(pwd)"',
        envs={"MY_VAR": "value with spaces"},
        cwd="/tmp",
    )
    assert result.stdout == "value with spaces|/tmp"


def test_default_user_home_and_cwd(shared_sandbox):
    result = shared_sandbox.commands.run('whoami; echo "$HOME"; pwd; id -u')
    assert result.stdout == "user\n/home/user\n/home/user\n1000\n"


def test_user_root(shared_sandbox):
    result = shared_sandbox.commands.run('whoami; echo "$HOME"; id -u', user="root")
    assert result.stdout == "root\n/root\n0\n"


def test_callbacks_receive_output_in_order(shared_sandbox):
    events = []
    result = shared_sandbox.commands.run(
        "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; sleep 0.05; done",
        on_stdout=lambda s: events.append(("out", s)),
        on_stderr=lambda s: events.append(("err", s)),
    )
    out = "".join(s for kind, s in events if kind == "out")
    err = "".join(s for kind, s in events if kind == "err")
    assert out == "out1\nout2\nout3\nout4\nout5\n"
    assert err == "err1\nerr2\nerr3\nerr4\nerr5\n"
    assert result.stdout == out
    assert result.stderr == err
    # Separated by sleeps, out1 reaches us before err2 and err1 before out3.
    flat = [line for _, chunk in events for line in chunk.splitlines()]
    assert flat.index("out1") < flat.index("err2")
    assert flat.index("err1") < flat.index("out3")


def test_output_is_streamed_not_buffered(shared_sandbox):
    arrivals = []
    shared_sandbox.commands.run(
        "echo first; sleep 1.5; echo second",
        on_stdout=lambda s: arrivals.append((time.monotonic(), s)),
    )
    text = "".join(s for _, s in arrivals)
    assert text == "first\nsecond\n"
    first_at = next(t for t, s in arrivals if "first" in s)
    second_at = next(t for t, s in arrivals if "second" in s)
    assert second_at - first_at >= 1.0, "stdout arrived only when the command ended"


def test_background_list_and_kill(shared_sandbox):
    handle = shared_sandbox.commands.run("sleep 30", background=True, timeout=30)
    try:
        listed = {p.pid: p for p in shared_sandbox.commands.list()}
        assert handle.pid in listed, f"pid {handle.pid} not in {sorted(listed)}"
        proc = listed[handle.pid]
        assert proc.cmd == "/bin/bash"
        assert proc.args == ["-l", "-c", "sleep 30"]

        started = time.monotonic()
        assert handle.kill() is True
        with pytest.raises(CommandExitException) as info:
            handle.wait()
        assert info.value.exit_code == -1
        assert info.value.error == "signal: killed"
        assert time.monotonic() - started < 10, "wait() did not end soon after kill()"
    finally:
        shared_sandbox.commands.kill(handle.pid)

    gone = wait_for(
        lambda: handle.pid not in {p.pid for p in shared_sandbox.commands.list()},
        timeout=5,
    )
    assert gone, "killed command still listed"
    assert shared_sandbox.commands.kill(handle.pid) is False


def test_background_wait_collects_output(shared_sandbox):
    handle = shared_sandbox.commands.run("echo a; sleep 0.2; echo b", background=True)
    result = handle.wait()
    assert result.stdout == "a\nb\n"
    assert result.exit_code == 0


def test_connect_to_running_command(shared_sandbox):
    handle = shared_sandbox.commands.run(
        "sleep 1.5; echo late-output; echo late-err >&2; exit 3",
        background=True,
        timeout=30,
    )
    try:
        handle.disconnect()
        other = shared_sandbox.commands.connect(handle.pid, timeout=30)
        assert other.pid == handle.pid
        with pytest.raises(CommandExitException) as info:
            other.wait()
        assert info.value.exit_code == 3
        assert "late-output\n" in info.value.stdout
        assert "late-err\n" in info.value.stderr
    finally:
        shared_sandbox.commands.kill(handle.pid)


def test_stdin_send_and_close(shared_sandbox):
    handle = shared_sandbox.commands.run("cat; echo done", background=True, stdin=True, timeout=30)
    try:
        shared_sandbox.commands.send_stdin(handle.pid, "hello ")
        shared_sandbox.commands.send_stdin(handle.pid, b"stdin\n")
        shared_sandbox.commands.close_stdin(handle.pid)

        done = threading.Event()
        box = {}

        def waiter():
            try:
                box["result"] = handle.wait()
            except Exception as e:  # surfaced below
                box["error"] = e
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        assert done.wait(15), "command did not end after close_stdin (EOF not delivered)"
        assert "error" not in box, box.get("error")
        assert box["result"].stdout == "hello stdin\ndone\n"
    finally:
        shared_sandbox.commands.kill(handle.pid)


def test_command_timeout_ends_it(shared_sandbox):
    started = time.monotonic()
    # As on E2B: a timeout, not an exit code (envd ends the stream with deadline_exceeded).
    with pytest.raises(TimeoutException):
        shared_sandbox.commands.run("sleep 21", timeout=1)
    assert time.monotonic() - started < 10
    # Like envd, the process is killed when the command's deadline passes.
    gone = wait_for(
        lambda: not any("sleep 21" in " ".join(p.args) for p in shared_sandbox.commands.list()),
        timeout=5,
    )
    assert gone, "the command outlived its timeout"
