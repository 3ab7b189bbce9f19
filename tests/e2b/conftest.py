"""Shared fixtures for the E2B SDK suite.

The tests are written the way code for E2B's hosted service is: `from e2b import Sandbox`,
default arguments (template `base`), configuration only from the environment. The Rust
harness points the SDK at Warren with E2B_API_URL, E2B_API_KEY and, optionally,
E2B_SANDBOX_URL / E2B_DOMAIN / SSL_CERT_FILE.
"""

import os
import ssl
import time
from importlib.metadata import version
from typing import Callable, List

import httpx
import pytest
import pytest_asyncio
from packaging.version import Version

import e2b
from e2b import AsyncSandbox, Sandbox

# The SDK under test: the suite runs under an SDK that checks key format (2.45) and the newest.
SDK = Version(version("e2b"))

# What a gone sandbox raises: newer SDKs name it, older ones raise its base class.
SandboxNotRunningException = getattr(e2b, "SandboxNotRunningException", e2b.TimeoutException)


def sdk_at_least(v: str):
    """Skip marker for behaviour an older SDK does not have (the SDK's own feature, not
    Warren's: the same test runs under the newer SDK)."""
    return pytest.mark.skipif(SDK < Version(v), reason=f"e2b {SDK} predates {v}")

REQUIRED_ENV = ("E2B_API_URL", "E2B_API_KEY")


def pytest_configure(config):
    # Without E2B_API_URL the SDK would talk to E2B's hosted API: refuse to run instead.
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        raise pytest.UsageError(
            "the E2B suite runs against a Warren server: set "
            + ", ".join(missing)
            + " (see tests/e2b/README.md)"
        )


def kill_quietly(sandbox_id: str) -> None:
    """Teardown: kill a sandbox, ignoring one that is already gone or any error."""
    try:
        Sandbox.kill(sandbox_id, request_timeout=20)
    except Exception:
        pass


async def akill_quietly(sandbox_id: str) -> None:
    try:
        await AsyncSandbox.kill(sandbox_id, request_timeout=20)
    except Exception:
        pass


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy; return that, or the last value
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def get_via_host(host: str, headers=None) -> httpx.Response:
    """GET /index.html with `Host: host`, sent to the server the SDK talks to (never to a name
    that would resolve elsewhere), the way E2B clients reach a sandbox's port."""
    base = os.environ.get("E2B_SANDBOX_URL") or os.environ["E2B_API_URL"]
    verify = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None)
    with httpx.Client(base_url=base, verify=verify, timeout=10) as client:
        return client.get(
            "/index.html",
            headers={"Host": host, **(headers or {})},
            extensions={"sni_hostname": host.split(":")[0]},
        )


def get_once_up(host: str, headers=None, timeout: float = 10.0):
    """`get_via_host` until it answers 200 (the app needs a moment to listen).
    Returns (the 200 response or None, the last answer as text)."""
    last = {"answer": None}

    def attempt():
        try:
            r = get_via_host(host, headers)
        except httpx.HTTPError as e:
            last["answer"] = repr(e)
            return None
        last["answer"] = f"{r.status_code} {r.text[:300]!r}"
        return r if r.status_code == 200 else None

    return wait_for(attempt, timeout=timeout, interval=0.2), last["answer"]


@pytest.fixture
def sandbox():
    """A fresh sandbox with default arguments, killed after the test."""
    sbx = Sandbox.create()
    try:
        yield sbx
    finally:
        kill_quietly(sbx.sandbox_id)


@pytest.fixture(scope="module")
def shared_sandbox():
    """One sandbox per module, for tests that only read or work in their own paths."""
    sbx = Sandbox.create()
    try:
        yield sbx
    finally:
        kill_quietly(sbx.sandbox_id)


@pytest.fixture
def sandbox_factory():
    """`make(**create_kwargs)` creates sandboxes that are all killed after the test."""
    created: List[str] = []

    def make(**kwargs) -> Sandbox:
        sbx = Sandbox.create(**kwargs)
        created.append(sbx.sandbox_id)
        return sbx

    try:
        yield make
    finally:
        for sandbox_id in created:
            kill_quietly(sandbox_id)


@pytest_asyncio.fixture
async def async_sandbox():
    sbx = await AsyncSandbox.create()
    try:
        yield sbx
    finally:
        await akill_quietly(sbx.sandbox_id)
