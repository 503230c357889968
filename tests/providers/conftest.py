"""Fixtures for adapter tests: recorded upstream bodies, canned replies (MockTransport), the simulator."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from taskq.providers import ProviderError
from tests.support.adapters import Replies, adapter_error, run_adapter
from tests.support.upstream import Upstream


@pytest.fixture
def recorded() -> Callable[[str], Any]:
    """Load a recorded body: parsed JSON for .json files, bytes otherwise."""

    def load(name: str) -> Any:
        raw = (Path(__file__).parent / "bodies" / name).read_bytes()
        return json.loads(raw) if name.endswith(".json") else raw

    return load


@pytest.fixture
def upstream() -> Callable[..., Replies]:
    return lambda *replies: Replies(list(replies))


@pytest.fixture
def call() -> Callable[..., dict[str, Any]]:
    return run_adapter


@pytest.fixture
def fails() -> Callable[..., ProviderError]:
    return adapter_error


@pytest.fixture(scope="module")
def simulator() -> Iterator[Upstream]:
    with Upstream(simulator=True, seed=1) as sim:
        yield sim


@pytest.fixture
def make_simulator() -> Callable[..., Upstream]:
    """For tests that need their own simulator options (latency, error rate): `with make_simulator(...)`."""
    return partial(Upstream, simulator=True)
