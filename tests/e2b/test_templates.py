"""Templates built from code (`Template().from_image(...)...`, `Template.build`), as E2B's docs
write them: steps, file uploads by hash, build logs, the build cache, start and ready
commands, and a failing step reported as a BuildException naming it."""

import uuid

import pytest

from e2b import (
    AsyncSandbox,
    AsyncTemplate,
    BuildException,
    Sandbox,
    Template,
    wait_for_port,
)

from conftest import kill_quietly, akill_quietly


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def context(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('from the app')\n")
    (tmp_path / "app" / "lib").mkdir()
    (tmp_path / "app" / "lib" / "util.py").write_text("X = 1\n")
    (tmp_path / "config.txt").write_text("setting=on\n")
    return tmp_path


def app_template(context):
    return (
        Template(file_context_path=str(context))
        .from_base_image()
        .run_cmd("echo root-step $(whoami) > /opt/made-by-root", user="root")
        .copy("config.txt", "/home/user/config.txt", mode=0o600)
        .copy("app", "/home/user/app/")
        .set_envs({"APP_MODE": "test", "GREETING": "hello template"})
        .set_workdir("/home/user/app")
        .run_cmd("whoami > steps.txt && pwd >> steps.txt && echo $APP_MODE >> steps.txt")
        .set_start_cmd("python -m http.server 8000", wait_for_port(8000))
    )


def test_build_runs_steps_and_sandboxes_start_from_the_template(context):
    name = unique("tmpl")
    logs = []
    info = Template.build(app_template(context), name, on_build_logs=logs.append)
    assert info.template_id == name
    assert info.build_id
    messages = [entry.message for entry in logs]
    assert any("RUN" in m and "root-step" in m for m in messages), messages
    assert any("COPY" in m and "config.txt" in m for m in messages), messages
    assert Template.exists(name)

    sandbox = Sandbox.create(name)
    try:
        run = sandbox.commands.run
        assert run("cat /opt/made-by-root").stdout.strip() == "root-step root"
        # Steps run as `user` by default (E2B's templates), in the workdir, with the env.
        assert run("cat /home/user/app/steps.txt").stdout.split() == [
            "user",
            "/home/user/app",
            "test",
        ]
        assert run("cat /home/user/config.txt").stdout == "setting=on\n"
        mode = run("stat -c '%U %a' /home/user/config.txt /home/user/app/lib/util.py")
        assert mode.stdout.split("\n")[:2] == ["user 600", "user 644"]
        assert run("python /home/user/app/main.py").stdout == "from the app\n"
        assert run("echo $GREETING").stdout.strip() == "hello template"
        # The start command runs and the create waited for its ready check.
        served = run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/")
        assert served.stdout == "200"
    finally:
        kill_quietly(sandbox.sandbox_id)


def test_an_unchanged_build_is_served_from_the_cache(context):
    name = unique("cached")
    template = (
        Template(file_context_path=str(context))
        .from_base_image()
        .copy("config.txt", "/home/user/config.txt")
        .run_cmd("date +%s%N > /home/user/stamp")
    )
    Template.build(template, name)
    logs = []
    Template.build(template, name, on_build_logs=logs.append)
    cached = [e.message for e in logs if "(cached)" in e.message]
    assert any("date +%s%N" in m for m in cached), [e.message for e in logs]

    # skip_cache runs the step again.
    logs = []
    Template.build(template, name, skip_cache=True, on_build_logs=logs.append)
    assert not any("(cached)" in e.message for e in logs)


def test_a_failing_step_raises_a_build_exception_naming_it():
    name = unique("broken")
    template = (
        Template()
        .from_base_image()
        .run_cmd("echo fine")
        .run_cmd("echo about to fail && exit 7")
    )
    logs = []
    with pytest.raises(BuildException) as err:
        Template.build(template, name, on_build_logs=logs.append)
    assert "exited with code 7" in str(err.value)
    assert any("about to fail" in e.message for e in logs)
    assert not Template.exists(name)


def test_an_unknown_base_image_fails_the_build():
    template = Template().from_image("127.0.0.1:9/no/such-image:1").run_cmd("true")
    with pytest.raises(BuildException) as err:
        Template.build(template, unique("nobase"))
    assert "127.0.0.1:9/no/such-image:1" in str(err.value)


@pytest.mark.asyncio
async def test_async_build_and_create(context):
    name = unique("async")
    template = (
        AsyncTemplate(file_context_path=str(context))
        .from_template("base")
        .copy("config.txt", "/tmp/config.txt")
        .run_cmd("cp /tmp/config.txt /tmp/copied.txt", user="root")
        .set_user("root")
    )
    logs = []
    await AsyncTemplate.build(template, name, on_build_logs=logs.append)
    assert logs
    sandbox = await AsyncSandbox.create(name)
    try:
        out = await sandbox.commands.run("whoami && cat /tmp/copied.txt")
        assert out.stdout == "root\nsetting=on\n"
    finally:
        await akill_quietly(sandbox.sandbox_id)


def test_tags_name_builds_and_sandboxes_start_from_them():
    name = unique("tagged")
    template = Template().from_base_image().run_cmd("echo v1 > /home/user/version")
    info = Template.build(template, f"{name}:v1", tags=["stable"])
    assert info.template_id == name
    assert set(info.tags) == {"v1", "stable"}
    tags = {t.tag: t for t in Template.get_tags(name)}
    assert set(tags) == {"v1", "stable"}
    assert tags["v1"].build_id == tags["stable"].build_id

    assigned = Template.assign_tags(f"{name}:v1", ["production", "latest"])
    assert set(assigned.tags) == {"production", "latest"}
    sandbox = Sandbox.create(f"{name}:production")
    try:
        assert sandbox.commands.run("cat /home/user/version").stdout == "v1\n"
    finally:
        kill_quietly(sandbox.sandbox_id)

    Template.remove_tags(name, ["stable", "latest"])
    assert {t.tag for t in Template.get_tags(name)} == {"v1", "production"}
    with pytest.raises(Exception):
        Template.remove_tags(name, ["never-assigned"])


def test_a_template_that_never_gets_ready_fails_its_build():
    # The server under test waits 8 s for a ready command (--ready-timeout 8s).
    template = (
        Template()
        .from_base_image()
        .set_start_cmd("sleep 1000", "test -f /home/user/never")
    )
    name = unique("never-ready")
    with pytest.raises(BuildException) as err:
        Template.build(template, name)
    assert "test -f /home/user/never" in str(err.value)
    assert not Template.exists(name)


def test_steps_start_in_the_users_home_and_name_unknown_users(context):
    # As on E2B: relative paths are the user's home's until set_workdir.
    name = unique("home")
    template = (
        Template(file_context_path=str(context))
        .from_base_image()
        .copy("config.txt", "conf/config.txt")
        .make_symlink("conf/config.txt", "config.link")
        .run_cmd('test "$(pwd)" = /home/user && cat config.link')
    )
    Template.build(template, name)
    broken = Template().from_base_image().skip_cache().run_cmd("whoami", user="nobody123")
    with pytest.raises(BuildException) as err:
        Template.build(broken, unique("nouser"))
    assert "invalid username: 'nobody123'" in str(err.value)
