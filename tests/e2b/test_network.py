"""E2B's network rules against hosts the Rust harness makes (network namespaces on
198.18.0.0/15 serving HTTP on port 8000; the first also answers DNS for every name with its own
address, and the server names it as the sandboxes' name server). Traffic never leaves this
machine. Run by crates/warren-cli/tests/e2b_sdk.rs; without its hosts this module refuses to
load rather than reach anything else."""

import os
import uuid

import pytest

from e2b import ALL_TRAFFIC, CommandExitException

from conftest import get_once_up

try:
    HOST_A = os.environ["WARREN_TEST_HOST_A"]
    HOST_B = os.environ["WARREN_TEST_HOST_B"]
except KeyError as missing:
    raise RuntimeError(
        f"{missing} unset: test_network.py runs against the test hosts "
        "crates/warren-cli/tests/e2b_sdk.rs makes"
    ) from None
PORT = 8000


def reaches(sbx, ip: str, name: str = "") -> bool:
    """Whether an HTTP GET from the sandbox to `ip` (as `name`, when given) gets an answer."""
    target = f"http://{name or ip}:{PORT}/"
    resolve = f"--resolve {name}:{PORT}:{ip} " if name else ""
    try:
        out = sbx.commands.run(
            f"curl -s -o /dev/null -w '%{{http_code}}' --connect-timeout 2 --max-time 4 {resolve}{target}",
            timeout=15,
        )
    except CommandExitException:
        return False
    return out.stdout.strip() == "200"


def test_deny_out_of_one_address_leaves_the_rest_open(sandbox_factory):
    sbx = sandbox_factory(network={"deny_out": [HOST_B]})
    assert reaches(sbx, HOST_A)
    assert not reaches(sbx, HOST_B)


def test_allow_out_takes_precedence_over_deny_out(sandbox_factory):
    sbx = sandbox_factory(network={"deny_out": [f"{HOST_A}/30", HOST_B], "allow_out": [HOST_A]})
    assert reaches(sbx, HOST_A)
    assert not reaches(sbx, HOST_B)


def test_only_what_allow_out_names_when_all_traffic_is_denied(sandbox_factory):
    sbx = sandbox_factory(network={"deny_out": [ALL_TRAFFIC], "allow_out": [HOST_B]})
    assert reaches(sbx, HOST_B)
    assert not reaches(sbx, HOST_A)


def test_domain_names_in_allow_out(sandbox_factory):
    # The test name server answers every name with host A's address: the name is let through
    # there, and only there.
    name = f"allowed-{uuid.uuid4().hex[:6]}.test"
    sbx = sandbox_factory(network={"deny_out": [ALL_TRAFFIC], "allow_out": [name]})
    assert reaches(sbx, HOST_A, name)
    assert not reaches(sbx, HOST_B)
    # The sandbox resolves the name itself through the same name server.
    out = sbx.commands.run(f"getent hosts {name}")
    assert out.stdout.split()[0] == HOST_A


def test_no_internet_access_refuses_everything(sandbox_factory):
    sbx = sandbox_factory(allow_internet_access=False)
    assert not reaches(sbx, HOST_A)
    assert not reaches(sbx, HOST_B)


def test_update_network_replaces_the_rules_at_once(sandbox_factory):
    sbx = sandbox_factory()
    assert reaches(sbx, HOST_A) and reaches(sbx, HOST_B)
    sbx.update_network({"deny_out": [HOST_A]})
    assert not reaches(sbx, HOST_A)
    assert reaches(sbx, HOST_B)
    # What is left out is cleared.
    sbx.update_network({})
    assert reaches(sbx, HOST_A)


def test_bad_rules_are_refused_with_e2b_errors(sandbox_factory):
    from e2b import SandboxException

    for network in (
        {"deny_out": ["example.com"]},
        {"deny_out": [ALL_TRAFFIC], "allow_out": ["*.example.com"]},
        {"deny_out": ["300.1.1.1"]},
    ):
        with pytest.raises(SandboxException) as err:
            sandbox_factory(network=network)
        assert "400" in str(err.value) or "egress" in str(err.value), err.value


def test_mask_request_host_is_the_host_the_app_sees(sandbox_factory):
    sbx = sandbox_factory(network={"mask_request_host": "localhost:${PORT}"})
    sbx.files.write(
        "/home/user/host_echo.py",
        "import http.server\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = self.headers.get('Host', '').encode()\n"
        "        self.send_response(200)\n"
        "        self.send_header('Content-Length', str(len(body)))\n"
        "        self.end_headers()\n"
        "        self.wfile.write(body)\n"
        "http.server.HTTPServer(('0.0.0.0', 8003), H).serve_forever()\n",
    )
    sbx.commands.run("python /home/user/host_echo.py", background=True, timeout=0)
    r, last = get_once_up(sbx.get_host(8003))
    assert r is not None, last
    assert r.text == "localhost:8003"
