"""`sandbox.files`: envd's filesystem service (Connect RPC) and its `/files` HTTP route."""

import hashlib
import io
import os
import uuid

import pytest

from e2b import FileNotFoundException, FilesystemEventType, FileType

from conftest import wait_for


@pytest.fixture
def workdir(shared_sandbox):
    """A fresh directory under the default user's home for each test."""
    path = f"/home/user/t-{uuid.uuid4().hex[:10]}"
    assert shared_sandbox.files.make_dir(path) is True
    return path


def test_write_and_read_text(shared_sandbox, workdir):
    path = f"{workdir}/hello.txt"
    text = "hello from the E2B SDK\nsecond line: ünïcödé ✓\n"
    info = shared_sandbox.files.write(path, text)
    assert info.path == path
    assert info.name == "hello.txt"
    assert info.type == FileType.FILE

    assert shared_sandbox.files.read(path) == text
    # The same bytes are seen from inside the sandbox.
    assert shared_sandbox.commands.run(f"cat {path}").stdout == text


def test_write_and_read_bytes(shared_sandbox, workdir):
    path = f"{workdir}/blob.bin"
    data = bytes(range(256)) * 64 + b"\x00\xff\r\n"
    shared_sandbox.files.write(path, data)
    got = shared_sandbox.files.read(path, format="bytes")
    assert isinstance(got, bytearray)
    assert bytes(got) == data
    size = shared_sandbox.commands.run(f"stat -c %s {path}").stdout.strip()
    assert int(size) == len(data)


def test_write_files_several_at_once(shared_sandbox, workdir):
    infos = shared_sandbox.files.write_files(
        [
            {"path": f"{workdir}/m1.txt", "data": "first"},
            {"path": f"{workdir}/m2.bin", "data": b"\x00second\xff"},
        ]
    )
    assert sorted(i.path for i in infos) == [f"{workdir}/m1.txt", f"{workdir}/m2.bin"]
    assert shared_sandbox.files.read(f"{workdir}/m1.txt") == "first"
    assert bytes(shared_sandbox.files.read(f"{workdir}/m2.bin", format="bytes")) == b"\x00second\xff"


def test_octet_stream_and_gzip_uploads(shared_sandbox, workdir):
    data = os.urandom(3 * 1024 * 1024 + 17)
    # A file-like object is streamed as application/octet-stream (envd >= 0.5.7).
    shared_sandbox.files.write(f"{workdir}/streamed.bin", io.BytesIO(data))
    # gzip=True compresses the octet-stream body (Content-Encoding: gzip).
    shared_sandbox.files.write(f"{workdir}/gzipped.bin", data, gzip=True)
    digest = hashlib.sha256(data).hexdigest()
    out = shared_sandbox.commands.run(f"sha256sum {workdir}/streamed.bin {workdir}/gzipped.bin").stdout
    assert [line.split()[0] for line in out.splitlines()] == [digest, digest]


def test_read_as_stream_and_gzip(shared_sandbox, workdir):
    data = os.urandom(2 * 1024 * 1024 + 3)
    path = f"{workdir}/download.bin"
    shared_sandbox.files.write(path, data)
    with shared_sandbox.files.read(path, format="stream") as stream:
        got = b"".join(stream)
    assert got == data
    assert bytes(shared_sandbox.files.read(path, format="bytes", gzip=True)) == data


def test_overwrite_replaces_content(shared_sandbox, workdir):
    path = f"{workdir}/over.txt"
    shared_sandbox.files.write(path, "a much longer first version")
    shared_sandbox.files.write(path, "short")
    assert shared_sandbox.files.read(path) == "short"


def test_write_creates_parent_directories(shared_sandbox, workdir):
    path = f"{workdir}/a/b/c/deep.txt"
    shared_sandbox.files.write(path, "deep")
    assert shared_sandbox.files.read(path) == "deep"
    assert shared_sandbox.files.get_info(f"{workdir}/a/b").type == FileType.DIR


def test_relative_path_is_in_home(shared_sandbox):
    name = f"rel-{uuid.uuid4().hex[:8]}.txt"
    shared_sandbox.files.write(name, "relative")
    assert shared_sandbox.files.exists(f"/home/user/{name}")
    assert shared_sandbox.files.read(f"/home/user/{name}") == "relative"


def test_read_missing_file_raises_file_not_found(shared_sandbox, workdir):
    with pytest.raises(FileNotFoundException):
        shared_sandbox.files.read(f"{workdir}/does-not-exist.txt")


def test_list(shared_sandbox, workdir):
    shared_sandbox.files.write(f"{workdir}/one.txt", "1")
    shared_sandbox.files.write(f"{workdir}/two.txt", "22")
    shared_sandbox.files.make_dir(f"{workdir}/sub")
    shared_sandbox.files.write(f"{workdir}/sub/inner.txt", "333")

    entries = {e.name: e for e in shared_sandbox.files.list(workdir)}
    assert set(entries) == {"one.txt", "two.txt", "sub"}
    assert entries["one.txt"].type == FileType.FILE
    assert entries["one.txt"].path == f"{workdir}/one.txt"
    assert entries["two.txt"].size == 2
    assert entries["sub"].type == FileType.DIR

    deep = {e.path for e in shared_sandbox.files.list(workdir, depth=2)}
    assert f"{workdir}/sub/inner.txt" in deep


def test_exists(shared_sandbox, workdir):
    shared_sandbox.files.write(f"{workdir}/here.txt", "x")
    assert shared_sandbox.files.exists(f"{workdir}/here.txt") is True
    assert shared_sandbox.files.exists(workdir) is True
    assert shared_sandbox.files.exists(f"{workdir}/not-here.txt") is False


def test_get_info(shared_sandbox, workdir):
    path = f"{workdir}/info.txt"
    shared_sandbox.files.write(path, "12345")
    info = shared_sandbox.files.get_info(path)
    assert info.name == "info.txt"
    assert info.path == path
    assert info.type == FileType.FILE
    assert info.size == 5
    assert info.owner == "user"
    assert info.group == shared_sandbox.commands.run("id -gn").stdout.strip()
    assert info.permissions.startswith("-rw")

    dir_info = shared_sandbox.files.get_info(workdir)
    assert dir_info.type == FileType.DIR

    with pytest.raises(FileNotFoundException):
        shared_sandbox.files.get_info(f"{workdir}/missing")


def test_rename(shared_sandbox, workdir):
    shared_sandbox.files.write(f"{workdir}/old.txt", "moving")
    entry = shared_sandbox.files.rename(f"{workdir}/old.txt", f"{workdir}/new.txt")
    assert entry.path == f"{workdir}/new.txt"
    assert entry.name == "new.txt"
    assert shared_sandbox.files.exists(f"{workdir}/old.txt") is False
    assert shared_sandbox.files.read(f"{workdir}/new.txt") == "moving"


def test_make_dir(shared_sandbox, workdir):
    path = f"{workdir}/x/y/z"
    assert shared_sandbox.files.make_dir(path) is True
    assert shared_sandbox.files.get_info(path).type == FileType.DIR
    # Already there: False, not an error.
    assert shared_sandbox.files.make_dir(path) is False


def test_remove(shared_sandbox, workdir):
    shared_sandbox.files.write(f"{workdir}/gone.txt", "bye")
    shared_sandbox.files.remove(f"{workdir}/gone.txt")
    assert shared_sandbox.files.exists(f"{workdir}/gone.txt") is False

    shared_sandbox.files.write(f"{workdir}/tree/leaf.txt", "leaf")
    shared_sandbox.files.remove(f"{workdir}/tree")
    assert shared_sandbox.files.exists(f"{workdir}/tree") is False


def test_files_are_owned_by_default_user(shared_sandbox, workdir):
    path = f"{workdir}/owned.txt"
    shared_sandbox.files.write(path, "mine")
    group = shared_sandbox.commands.run("id -gn").stdout.strip()
    out = shared_sandbox.commands.run(f"stat -c '%U:%G' {path} {workdir}").stdout
    assert out == f"user:{group}\nuser:{group}\n"


def test_root_user_writes_root_owned_file(shared_sandbox):
    path = f"/root/root-{uuid.uuid4().hex[:8]}.txt"
    shared_sandbox.files.write(path, "as root", user="root")
    assert shared_sandbox.files.read(path, user="root") == "as root"
    assert shared_sandbox.commands.run(f"stat -c %U {path}", user="root").stdout == "root\n"


def test_watch_dir_sees_created_file(shared_sandbox, workdir):
    handle = shared_sandbox.files.watch_dir(workdir)
    try:
        shared_sandbox.files.write(f"{workdir}/watched.txt", "event")
        seen = []

        def poll():
            seen.extend(handle.get_new_events())
            return any(
                e.name == "watched.txt"
                and e.type in (FilesystemEventType.CREATE, FilesystemEventType.WRITE)
                for e in seen
            )

        assert wait_for(poll, timeout=10, interval=0.2), f"events: {seen}"
        assert any(e.type == FilesystemEventType.CREATE for e in seen if e.name == "watched.txt"), seen

        shared_sandbox.files.remove(f"{workdir}/watched.txt")
        assert wait_for(
            lambda: poll() and any(e.type == FilesystemEventType.REMOVE for e in seen),
            timeout=10,
            interval=0.2,
        ), f"no remove event: {seen}"
    finally:
        handle.stop()


def test_large_file_roundtrip_50mb(shared_sandbox, workdir):
    path = f"{workdir}/big.bin"
    data = os.urandom(50 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()

    info = shared_sandbox.files.write(path, data)
    assert info.path == path

    inside = shared_sandbox.commands.run(f"sha256sum {path}").stdout.split()[0]
    assert inside == digest

    got = shared_sandbox.files.read(path, format="bytes")
    assert len(got) == len(data)
    assert hashlib.sha256(got).hexdigest() == digest
    shared_sandbox.files.remove(path)
