"""An agent's session with Warren over MCP, through the official Python SDK (`mcp`).

Usage: agent.py stdio|http. stdio spawns `$WARREN_BIN mcp` (WARREN_URL, WARREN_API_KEY in
its environment); http speaks streamable HTTP to `$WARREN_URL/mcp` with the key as a bearer
token. It does what an agent would: create a sandbox, write a Python file, run it, read its
output, start a server on a port in the background and fetch its preview URL, then kill the
sandbox. Prints one line per step; exits 1 naming the step that failed.
"""
import asyncio
import json
import os
import sys
import urllib.request

import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

URL = os.environ["WARREN_URL"].rstrip("/")
KEY = os.environ["WARREN_API_KEY"]
IMAGE = os.environ.get("WARREN_TEST_IMAGE", "base")


def text_of(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def call(s, name, args, expect_error=False, progress=None):
    result = await s.call_tool(name, args, progress_callback=progress)
    if bool(result.is_error) != expect_error:
        raise SystemExit(f"{name}: {'no error' if expect_error else 'error'}: {text_of(result)}")
    return text_of(result)


async def agent(s):
    await s.initialize()
    tools = {t.name: t for t in (await s.list_tools()).tools}
    for name in ["create_sandbox", "run_command", "write_file", "read_file", "preview_url", "kill_sandbox"]:
        assert name in tools, f"tool {name} missing: {sorted(tools)}"
        assert tools[name].description and tools[name].input_schema.get("type") == "object", name
    print("tools:", len(tools))

    sb = json.loads(await call(s, "create_sandbox", {"image": IMAGE, "runtime": "runc", "timeout_s": 300}))
    sid = sb["id"]
    print("created", sid, sb["state"])
    try:
        await call(s, "write_file", {"id": sid, "path": "/tmp/hello.py", "content": "import sys\nprint('hello from', sys.version_info.major)\nprint('to stderr', file=sys.stderr)\n"})
        assert "print('hello from'" in await call(s, "read_file", {"id": sid, "path": "/tmp/hello.py"})
        seen = []

        async def progress(p, total, message):
            seen.append(message or "")

        ran = json.loads(await call(s, "run_command", {"id": sid, "command": "python3 /tmp/hello.py"}, progress=progress))
        assert ran["exit_code"] == 0 and ran["stdout"] == "hello from 3\n", ran
        assert ran["stderr"] == "to stderr\n", ran
        assert any("hello from 3" in m for m in seen), f"no progress with the output: {seen}"
        print("ran:", ran["stdout"].strip(), "| progress notes:", len(seen))

        failed = json.loads(await call(s, "run_command", {"id": sid, "command": "exit 3"}))
        assert failed["exit_code"] == 3, failed

        listing = json.loads(await call(s, "list_files", {"id": sid, "path": "/tmp"}))
        assert any(e["name"] == "hello.py" for e in listing["entries"]), listing

        bg = json.loads(await call(s, "start_command", {"id": sid, "command": "cd /tmp && echo serving && python3 -m http.server 8000"}))
        for _ in range(100):
            out = json.loads(await call(s, "read_command_output", {"id": sid, "handle": bg["handle"]}))
            got = await s.call_tool("preview_url", {"id": sid, "port": 8000})
            if not got.is_error:
                break
            await asyncio.sleep(0.2)
        assert not got.is_error, f"no preview URL after 20 s: {text_of(got)}"
        assert out["running"] and "serving" in out["output"], out
        preview = json.loads(text_of(got))
        url = preview["url"]
        # The preview host is `<id>-8000.localhost:<port>`: sent to the server itself.
        host = url.split("//", 1)[1].split("/", 1)[0]
        req = urllib.request.Request(URL + "/hello.py", headers={"Host": host, **preview["headers"]})
        body = urllib.request.urlopen(req, timeout=10).read().decode()
        assert "hello from" in body, body
        print("preview:", url, "->", len(body), "bytes")

        err = await call(s, "read_file", {"id": sid, "path": "/nope"}, expect_error=True)
        assert "not_found" in err or "no such" in err.lower(), err
        err = await call(s, "get_sandbox", {"id": "nope"}, expect_error=True)
        assert "not found" in err, err
        print("errors: as tool errors, in the API's words")
    finally:
        await call(s, "kill_sandbox", {"id": sid})
    print("killed", sid)


async def main(transport):
    # A hung session fails the test in minutes rather than stalling it.
    await asyncio.wait_for(session(transport), timeout=240)
    print("agent: ok", transport)


async def session(transport):
    if transport == "stdio":
        params = StdioServerParameters(
            command=os.environ["WARREN_BIN"],
            args=["mcp"],
            env={"WARREN_URL": URL, "WARREN_API_KEY": KEY, "PATH": os.environ.get("PATH", "")},
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                await agent(s)
    else:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:
            async with streamable_http_client(URL + "/mcp", http_client=http) as (read, write):
                async with ClientSession(read, write) as s:
                    await agent(s)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
