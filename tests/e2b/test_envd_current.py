"""What the SDKs need a current envd (0.6.x) for, and envd's own file rules: file metadata
kept as `user.e2b.*` extended attributes, entries in watch events, network mounts refused
unless allowed, removing a missing path, symlinks and relative paths in `get_info`, relative
`cwd`, and the events a write makes."""

import uuid

import pytest

from e2b import FilesystemEventType, FileType, InvalidArgumentException

from conftest import SDK, sdk_at_least, wait_for
from packaging.version import Version


@pytest.fixture
def workdir(shared_sandbox):
    path = f"/home/user/m-{uuid.uuid4().hex[:10]}"
    assert shared_sandbox.files.make_dir(path) is True
    return path


def test_agent_reports_a_current_envd(shared_sandbox):
    assert shared_sandbox._envd_version >= Version("0.6.4")


@sdk_at_least("2.45")
def test_metadata_is_written_read_listed_and_kept_across_rename(shared_sandbox, workdir):
    sbx = shared_sandbox
    md = {"author": "mish", "purpose": "upload"}
    info = sbx.files.write(f"{workdir}/a.txt", "content", metadata=md)
    assert info.metadata == md
    assert sbx.files.get_info(f"{workdir}/a.txt").metadata == md

    # The octet-stream upload carries it too; several files at once all get it.
    info = sbx.files.write(f"{workdir}/b.txt", "b", metadata={"k": "v"}, use_octet_stream=True)
    assert info.metadata == {"k": "v"}
    from e2b.sandbox.filesystem.filesystem import WriteEntry

    infos = sbx.files.write_files(
        [WriteEntry(path=f"{workdir}/m1", data="1"), WriteEntry(path=f"{workdir}/m2", data="2")],
        metadata={"source": "suite"},
    )
    assert [i.metadata for i in infos] == [{"source": "suite"}] * 2

    listed = {e.name: e.metadata for e in sbx.files.list(workdir)}
    assert listed["a.txt"] == md and listed["m2"] == {"source": "suite"}

    moved = sbx.files.rename(f"{workdir}/a.txt", f"{workdir}/renamed.txt")
    assert moved.metadata == md
    # Inside the sandbox it is an ordinary extended attribute.
    out = sbx.commands.run(
        f"python -c \"import os; print(os.getxattr('{workdir}/renamed.txt', 'user.e2b.author').decode())\""
    )
    assert out.stdout.strip() == "mish"


@sdk_at_least("2.45")
def test_overwrite_without_metadata_clears_it_and_xattrs_set_inside_show(shared_sandbox, workdir):
    sbx = shared_sandbox
    path = f"{workdir}/o.txt"
    sbx.files.write(path, "first", metadata={"author": "mish", "stale": "yes"})
    assert sbx.files.write(path, "second", metadata={"author": "x"}).metadata == {"author": "x"}
    assert sbx.files.write(path, "third").metadata is None
    assert sbx.files.get_info(path).metadata is None
    assert sbx.files.write(f"{workdir}/plain.txt", "no metadata").metadata is None

    sbx.commands.run(
        f"python -c \"import os; os.setxattr('{path}', 'user.e2b.set-inside', b'yes'); "
        f"os.setxattr('{path}', 'user.other', b'not ours')\""
    )
    assert sbx.files.get_info(path).metadata == {"set-inside": "yes"}


@sdk_at_least("2.45")
def test_invalid_metadata_is_refused(shared_sandbox, workdir):
    with pytest.raises(InvalidArgumentException):
        shared_sandbox.files.write(f"{workdir}/bad", "x", metadata={"bad key": "v"})
    # Past the SDK's own checks, the sandbox refuses what would not fit an inode's attributes.
    with pytest.raises(InvalidArgumentException):
        shared_sandbox.files.write(f"{workdir}/big", "x", metadata={"k": "v" * 5000})
    assert shared_sandbox.files.exists(f"{workdir}/big") is False


def test_remove_of_a_missing_path_succeeds(shared_sandbox, workdir):
    shared_sandbox.files.remove(f"{workdir}/never-there")
    shared_sandbox.files.remove("never-there-either.txt")


def test_get_info_of_symlinks_and_relative_paths(shared_sandbox):
    sbx = shared_sandbox
    d = f"link-{uuid.uuid4().hex[:8]}"
    sbx.files.make_dir(d)
    sbx.files.write(f"{d}/test.txt", "Hello, World!")
    # A relative cwd is the user's home's, as for file paths.
    sbx.commands.run("ln -s test.txt link.txt && ln -s nowhere dangling", cwd=d)
    home = sbx.commands.run("pwd").stdout.strip()

    info = sbx.files.get_info(f"{d}/link.txt")
    assert info.path == f"{home}/{d}/link.txt"
    assert info.symlink_target == f"{home}/{d}/test.txt"
    # SDKs that know envd's `is_symlink` call it a link; older ones see its target's type.
    assert info.type == (FileType.SYMLINK if SDK >= Version("2.63") else FileType.FILE)
    # A dangling link cannot be resolved: envd names the link itself.
    assert sbx.files.get_info(f"{d}/dangling").symlink_target == f"{home}/{d}/dangling"

    rel = sbx.files.get_info(f"{d}/test.txt")
    assert rel.path == f"{home}/{d}/test.txt" and rel.size == 13
    assert (rel.owner, rel.group, rel.permissions) == ("user", "user", "-rw-r--r--")
    sbx.files.remove(d)
    assert sbx.files.exists(d) is False


def test_a_write_makes_create_chmod_and_write_events(shared_sandbox, workdir):
    sbx = shared_sandbox
    handle = sbx.files.watch_dir(workdir)
    try:
        sbx.files.write(f"{workdir}/w.txt", "watched")
        events = wait_for(lambda: handle.get_new_events(), 10)
        # envd chowns every upload: create, chmod, write, in that order.
        assert [(e.type, e.name) for e in events] == [
            (FilesystemEventType.CREATE, "w.txt"),
            (FilesystemEventType.CHMOD, "w.txt"),
            (FilesystemEventType.WRITE, "w.txt"),
        ]
    finally:
        handle.stop()


@sdk_at_least("2.45")
def test_watch_events_carry_entries_when_asked(shared_sandbox, workdir):
    sbx = shared_sandbox
    handle = sbx.files.watch_dir(workdir, include_entry=True)
    try:
        sbx.files.write(f"{workdir}/e.txt", "entry", metadata={"tag": "t"})
        sbx.files.rename(f"{workdir}/e.txt", f"{workdir}/f.txt")
        sbx.files.remove(f"{workdir}/f.txt")

        def all_seen():
            seen.extend(handle.get_new_events())
            return any(e.type == FilesystemEventType.REMOVE for e in seen)

        seen = []
        assert wait_for(all_seen, 10), seen
        writes = [e for e in seen if e.type == FilesystemEventType.WRITE]
        assert writes and writes[0].entry is not None
        assert writes[0].entry.path == f"{workdir}/e.txt"
        assert writes[0].entry.size == 5 and writes[0].entry.type == FileType.FILE
        # A rename away or a remove names an entry that is gone: no entry.
        for e in seen:
            if e.type in (FilesystemEventType.RENAME, FilesystemEventType.REMOVE):
                assert e.entry is None, e
    finally:
        handle.stop()


@sdk_at_least("2.45")
def test_network_mounts_are_watched_only_when_allowed(shared_sandbox, workdir):
    # The sandbox's own disk is no network mount: allowed or not, the watch works.
    for allow in (False, True):
        handle = shared_sandbox.files.watch_dir(workdir, allow_network_mounts=allow)
        shared_sandbox.files.write(f"{workdir}/n-{allow}.txt", "x")
        assert wait_for(lambda: handle.get_new_events(), 10)
        handle.stop()


def test_files_that_report_no_length_are_read_to_their_end(shared_sandbox):
    # /proc reports 0 bytes for files that hold text; envd streams them whole.
    boot_id = shared_sandbox.files.read("/proc/sys/kernel/random/boot_id").strip()
    assert len(boot_id) == 36 and boot_id.count("-") == 4, boot_id
    assert "MemTotal" in shared_sandbox.files.read("/proc/meminfo")
