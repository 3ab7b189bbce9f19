"""The async client, `AsyncSandbox`."""

import asyncio
import uuid

import pytest

from e2b import (
    AsyncSandbox,
    CommandExitException,
    FilesystemEventType,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)

from conftest import akill_quietly


@pytest.mark.asyncio
async def test_async_lifecycle():
    tag = uuid.uuid4().hex
    sbx = await AsyncSandbox.create(metadata={"async-tag": tag}, envs={"ASYNC_VAR": "yes"}, timeout=90)
    try:
        assert await sbx.is_running() is True

        info = await sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.metadata == {"async-tag": tag}
        assert info.state == SandboxState.RUNNING
        assert abs((info.end_at - info.started_at).total_seconds() - 90) <= 5

        paginator = AsyncSandbox.list(query=SandboxQuery(metadata={"async-tag": tag}))
        listed = []
        while paginator.has_next:
            listed.extend(await paginator.next_items())
        assert [s.sandbox_id for s in listed] == [sbx.sandbox_id]

        same = await AsyncSandbox.connect(sbx.sandbox_id)
        assert (await same.commands.run("echo $ASYNC_VAR")).stdout == "yes\n"

        assert await sbx.kill() is True
        assert await sbx.is_running() is False
        assert await AsyncSandbox.kill(sbx.sandbox_id) is False
        with pytest.raises(SandboxNotFoundException):
            await AsyncSandbox.get_info(sbx.sandbox_id)
    finally:
        await akill_quietly(sbx.sandbox_id)


@pytest.mark.asyncio
async def test_async_commands(async_sandbox):
    result = await async_sandbox.commands.run("echo async-out; echo async-err >&2; whoami")
    assert result.stdout == "async-out\nuser\n"
    assert result.stderr == "async-err\n"
    assert result.exit_code == 0

    chunks = []
    await async_sandbox.commands.run("for i in 1 2 3; do echo $i; sleep 0.05; done", on_stdout=chunks.append)
    assert "".join(chunks) == "1\n2\n3\n"

    with pytest.raises(CommandExitException) as info:
        await async_sandbox.commands.run("exit 4")
    assert info.value.exit_code == 4

    handle = await async_sandbox.commands.run("cat", background=True, stdin=True, timeout=30)
    await async_sandbox.commands.send_stdin(handle.pid, "piped\n")
    await async_sandbox.commands.close_stdin(handle.pid)
    assert (await handle.wait()).stdout == "piped\n"


@pytest.mark.asyncio
async def test_async_files(async_sandbox):
    path = f"/home/user/async-{uuid.uuid4().hex[:8]}.txt"
    info = await async_sandbox.files.write(path, "async text ✓")
    assert info.path == path
    assert await async_sandbox.files.read(path) == "async text ✓"

    blob = bytes(range(256)) * 16
    await async_sandbox.files.write(path + ".bin", blob)
    assert bytes(await async_sandbox.files.read(path + ".bin", format="bytes")) == blob

    assert await async_sandbox.files.exists(path) is True
    names = {e.name for e in await async_sandbox.files.list("/home/user")}
    assert path.rsplit("/", 1)[1] in names
    await async_sandbox.files.remove(path)
    assert await async_sandbox.files.exists(path) is False


@pytest.mark.asyncio
async def test_async_watch_dir_streams_events(async_sandbox):
    # The async client watches with the streaming WatchDir RPC (the sync one polls).
    path = f"/home/user/watch-{uuid.uuid4().hex[:8]}"
    await async_sandbox.files.make_dir(path)
    events = []
    exits = []
    handle = await async_sandbox.files.watch_dir(
        path, on_event=events.append, on_exit=exits.append, recursive=True
    )
    try:
        await async_sandbox.files.write(f"{path}/a.txt", "a")
        await async_sandbox.files.make_dir(f"{path}/sub")
        await async_sandbox.files.write(f"{path}/sub/b.txt", "b")

        deadline = asyncio.get_running_loop().time() + 10
        wanted = {("a.txt", FilesystemEventType.CREATE), ("sub/b.txt", FilesystemEventType.CREATE)}
        while not wanted <= {(e.name, e.type) for e in events}:
            assert asyncio.get_running_loop().time() < deadline, f"events: {events}"
            await asyncio.sleep(0.05)
    finally:
        await handle.stop()
    assert exits in ([], [None]), exits


@pytest.mark.asyncio
async def test_async_command_timeout_raises_timeout(async_sandbox):
    from e2b import TimeoutException

    with pytest.raises(TimeoutException):
        await async_sandbox.commands.run("sleep 10", timeout=2)
