"""Shared fixtures for the E2B SDK suite.

The tests are written the way code for E2B's hosted service is: `from e2b import Sandbox`,
default arguments (template `base`), configuration only from the environment. The Rust
harness points the SDK at Warren with E2B_API_URL, E2B_API_KEY and, optionally,
E2B_SANDBOX_URL / E2B_DOMAIN / SSL_CERT_FILE.
"""

import os
import time
from typing import Callable, List

import pytest
import pytest_asyncio

from e2b import AsyncSandbox, Sandbox

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
