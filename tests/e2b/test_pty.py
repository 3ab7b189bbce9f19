"""`sandbox.pty`: a terminal through envd's process service.

The async client takes `on_data` in `pty.create`; the sync client (2.63) returns a handle
whose output is read by iterating it (`handle.wait(on_pty=...)`), done here on a thread.
"""

import asyncio
import re
import threading
import time

import pytest

from e2b import CommandExitException, PtySize

from conftest import wait_for


class Screen:
    """Everything a terminal printed, as text (it arrives in arbitrary chunks)."""

    def __init__(self):
        self._chunks = []
        self._lock = threading.Lock()

    def feed(self, data: bytes) -> None:
        with self._lock:
            self._chunks.append(bytes(data))

    @property
    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode("utf-8", "replace")


# 30 s: on CI's loaded 2-core test cluster a gVisor Pod's shell once took longer than 10 s to
# answer `stty size; whoami` (the command was echoed, its output came later).
async def _await_text(screen: Screen, pattern: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, screen.text):
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not seen in terminal output: {screen.text[-500:]!r}")
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_pty_create_input_resize_kill(async_sandbox):
    screen = Screen()
    terminal = await async_sandbox.pty.create(PtySize(rows=24, cols=80), on_data=screen.feed)
    assert terminal.pid > 0

    # Arithmetic so that the echoed input line cannot match the output.
    await async_sandbox.pty.send_stdin(terminal.pid, b"echo hi-$((6*7))\n")
    await _await_text(screen, r"hi-42")

    await async_sandbox.pty.send_stdin(terminal.pid, b"stty size; whoami\n")
    await _await_text(screen, r"24 80\s+user")

    await async_sandbox.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
    await async_sandbox.pty.send_stdin(terminal.pid, b"stty size\n")
    await _await_text(screen, r"30 100")

    # It is a real terminal.
    await async_sandbox.pty.send_stdin(terminal.pid, b"tty; echo TERM=$TERM\n")
    await _await_text(screen, r"/dev/pts/\d+")
    await _await_text(screen, r"TERM=xterm-256color")

    assert await async_sandbox.pty.kill(terminal.pid) is True
    with pytest.raises(CommandExitException):
        await asyncio.wait_for(terminal.wait(), timeout=10)
    assert await async_sandbox.pty.kill(terminal.pid) is False


@pytest.mark.asyncio
async def test_pty_exit_reports_exit_code(async_sandbox):
    screen = Screen()
    terminal = await async_sandbox.pty.create(PtySize(rows=24, cols=80), on_data=screen.feed)
    await async_sandbox.pty.send_stdin(terminal.pid, b"exit 5\n")
    with pytest.raises(CommandExitException) as info:
        await asyncio.wait_for(terminal.wait(), timeout=10)
    assert info.value.exit_code == 5


@pytest.mark.asyncio
async def test_pty_user_cwd_envs_and_reconnect(async_sandbox):
    screen = Screen()
    terminal = await async_sandbox.pty.create(
        PtySize(rows=24, cols=80),
        on_data=screen.feed,
        user="root",
        cwd="/tmp",
        envs={"PTY_VAR": "pty-value"},
    )
    listed = {p.pid: p for p in await async_sandbox.commands.list()}
    assert terminal.pid in listed
    assert listed[terminal.pid].args == ["-i", "-l"]

    await async_sandbox.pty.send_stdin(terminal.pid, b'echo "$(whoami):$(pwd):$PTY_VAR"\n')
    await _await_text(screen, r"root:/tmp:pty-value")

    # Leave and come back: the terminal keeps running, and its new output reaches us.
    await terminal.disconnect()
    again = Screen()
    reconnected = await async_sandbox.pty.connect(terminal.pid, on_data=again.feed)
    await async_sandbox.pty.send_stdin(terminal.pid, b"echo back-$((2+3))\n")
    await _await_text(again, r"back-5")

    await async_sandbox.pty.send_stdin(terminal.pid, b"exit 3\n")
    with pytest.raises(CommandExitException) as info:
        await asyncio.wait_for(reconnected.wait(), timeout=10)
    assert info.value.exit_code == 3


def test_sync_pty(shared_sandbox):
    screen = Screen()
    terminal = shared_sandbox.pty.create(PtySize(rows=20, cols=60))
    box = {}

    def reader():
        try:
            box["result"] = terminal.wait(on_pty=screen.feed)
        except Exception as e:
            box["error"] = e

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        shared_sandbox.pty.send_stdin(terminal.pid, b"stty size; echo sync-$((40+2))\n")
        assert wait_for(lambda: "20 60" in screen.text and "sync-42" in screen.text, timeout=10), (
            screen.text[-500:]
        )

        shared_sandbox.pty.resize(terminal.pid, PtySize(rows=33, cols=111))
        shared_sandbox.pty.send_stdin(terminal.pid, b"stty size\n")
        assert wait_for(lambda: "33 111" in screen.text, timeout=10), screen.text[-500:]

        shared_sandbox.pty.send_stdin(terminal.pid, b"exit 0\n")
        thread.join(10)
        assert not thread.is_alive(), "terminal did not end after `exit 0`"
        assert "error" not in box, box.get("error")
        assert box["result"].exit_code == 0
    finally:
        shared_sandbox.pty.kill(terminal.pid)
