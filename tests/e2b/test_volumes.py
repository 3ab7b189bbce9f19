"""E2B volumes against Warren: made, mounted into sandboxes with `volume_mounts`, shared, and
outliving them; `Volume.destroy` once nothing mounts it."""

import uuid

from e2b import Sandbox, Volume

from conftest import kill_quietly


def test_a_volume_is_shared_by_sandboxes_and_outlives_them():
    name = "e2b-" + uuid.uuid4().hex[:10]
    vol = Volume.create(name)
    assert vol.name == name
    assert name in [v.name for v in Volume.list()]
    first = Sandbox.create(volume_mounts={"/data": vol})
    try:
        second = Sandbox.create(volume_mounts={"/shared": name})
        try:
            first.files.write("/data/note.txt", "written by the first")
            assert second.files.read("/shared/note.txt") == "written by the first"
        finally:
            kill_quietly(second.sandbox_id)
    finally:
        kill_quietly(first.sandbox_id)
    third = Sandbox.create(volume_mounts={"/again": name})
    try:
        assert third.files.read("/again/note.txt") == "written by the first"
    finally:
        kill_quietly(third.sandbox_id)
    assert Volume.destroy(vol.volume_id) is True
    assert name not in [v.name for v in Volume.list()]
