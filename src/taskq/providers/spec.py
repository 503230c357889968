"""Provider specs: everything taskq knows about one task type, declared once in its adapter module.

Each adapter module ends with a ``SPEC = ProviderSpec(...)`` and ``providers/__init__.py`` lists the
specs; the task types, payload models, prices, settings and timeouts are all read from that list.
Settings names are declared here as plain names (``openai`` gives ``TASKQ_OPENAI_API_KEY``,
``TASKQ_OPENAI_API_KEYS``, ``TASKQ_OPENAI_BASE_URL``, ``TASKQ_OPENAI_MODEL``): ``taskq.settings``
builds its provider settings from them, so adapters never import settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taskq.providers.base import Adapter
from taskq.schemas.payloads import Payload


@dataclass(frozen=True)
class Upstream:
    """One upstream API and the defaults of its settings; several task types may share one (SerpApi)."""

    name: str  # the settings prefix: TASKQ_<NAME>_API_KEY, _API_KEYS, _BASE_URL, _MODEL
    base_url: str
    model: str | None = None  # default model; None: the upstream has no model setting
    keyed: bool = True  # False: callable without a key (Google News), so always configured

    @property
    def settings(self) -> tuple[str, ...]:
        """The settings fields of this upstream, lowercase without the TASKQ_ prefix."""
        names = [f"{self.name}_api_key", f"{self.name}_api_keys"] if self.keyed else []
        names.append(f"{self.name}_base_url")
        if self.model is not None:
            names.append(f"{self.name}_model")
        return tuple(names)


@dataclass(frozen=True)
class Limits:
    """Default flow limits of a task type; None means no limit unless the operator configures one."""

    requests_per_second: float | None = None
    in_flight: int | None = None  # calls in flight across all workers (TASKQ_PROVIDER_CAPS)


@dataclass(frozen=True)
class ProviderSpec:
    """One task type: what it accepts, how it runs, where it calls, what it costs and how long it may take."""

    task_type: str
    payload: type[Payload]
    run: Adapter
    upstream: Upstream
    price: int  # credits, the base async price (cloro-api.md §9); TASKQ_PRICES overrides
    timeout: float  # seconds per upstream call; TASKQ_PROVIDER_TIMEOUTS / _TIMEOUT_SECONDS override
    limits: Limits = field(default_factory=Limits)
