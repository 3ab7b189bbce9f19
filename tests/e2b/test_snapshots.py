"""E2B snapshots and forks against Warren: `create_snapshot`, a sandbox from its id as the
template, `list_snapshots`, and `fork(count=2)`: each new sandbox has the source's files and
its running processes."""

from e2b import Sandbox

from conftest import kill_quietly


def test_snapshot_then_template_and_fork_bring_files_and_processes(sandbox):
    sandbox.files.write("/home/user/kept", "before the snapshot")
    sleeper = sandbox.commands.run("sleep 600", background=True)
    info = sandbox.create_snapshot()
    assert info.snapshot_id
    assert info.snapshot_id in [s.snapshot_id for s in sandbox.list_snapshots().next_items()]
    # The source runs on.
    assert sandbox.commands.run("echo still-here").stdout == "still-here\n"

    made = Sandbox.create(template=info.snapshot_id)
    try:
        assert made.sandbox_id != sandbox.sandbox_id
        assert made.files.read("/home/user/kept") == "before the snapshot"
        assert sleeper.pid in [p.pid for p in made.commands.list()]
    finally:
        kill_quietly(made.sandbox_id)

    forks = sandbox.fork(count=2)
    assert len(forks) == 2
    try:
        for f in forks:
            assert isinstance(f, Sandbox), f
            assert f.files.read("/home/user/kept") == "before the snapshot"
            assert sleeper.pid in [p.pid for p in f.commands.list()]
    finally:
        for f in forks:
            if isinstance(f, Sandbox):
                kill_quietly(f.sandbox_id)
