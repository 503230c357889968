"""Per-provider task payloads: fields, bounds and mutual exclusions of cloro-api.md §6."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from taskq.schemas.geo import COUNTRIES, US_STATES


def _country(value: str) -> str:
    if value not in COUNTRIES:
        raise ValueError("must be an uppercase ISO 3166-1 alpha-2 country code, e.g. US")
    return value


def _gl(value: str) -> str:
    if value.upper() not in COUNTRIES:
        raise ValueError("must be an ISO 3166-1 alpha-2 country code, e.g. us")
    return value.lower()


def _state(value: str) -> str:
    if value not in US_STATES:
        raise ValueError("must be a US state code, e.g. CA")
    return value


Text = Annotated[str, Field(min_length=1, max_length=10_000)]
Country = Annotated[str, AfterValidator(_country)]
Gl = Annotated[str, AfterValidator(_gl)]
State = Annotated[str, AfterValidator(_state)]
Hl = Annotated[str, Field(min_length=2, max_length=16, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")]
Location = Annotated[str, Field(min_length=1, max_length=200)]
Uule = Annotated[str, Field(min_length=1, max_length=500)]
Pages = Annotated[int, Field(ge=1, le=10)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ChatInclude(_Strict):
    markdown: bool = False
    html: bool = False
    rawResponse: bool = False


class ChatGPTInclude(ChatInclude):
    searchQueries: bool = False
    ads: bool = False
    shopping: bool = False


class Payload(_Strict):
    """Base of every task payload model; each provider's spec names its own."""


class ChatPayload(Payload):
    prompt: Text
    country: Country
    state: State | None = None

    @model_validator(mode="after")
    def _state_needs_us(self) -> ChatPayload:
        if self.state is not None and self.country != "US":
            raise ValueError("state is only valid with country US")
        return self


class ChatGPTPayload(ChatPayload):
    include: ChatGPTInclude = ChatGPTInclude()
    legacy: bool = False
    disableWebSearch: bool = False


class GeminiPayload(ChatPayload):
    include: ChatInclude = ChatInclude()


class GrokPayload(ChatPayload):
    include: ChatInclude = ChatInclude()


class CopilotPayload(ChatPayload):
    include: ChatInclude = ChatInclude()


class PerplexityPayload(ChatPayload):
    include: ChatInclude = ChatInclude()


class _GoogleFamily(Payload):
    """country or gl (same value when both), hl, and location or uule."""

    country: Country | None = None
    gl: Gl | None = None
    hl: Hl | None = None
    location: Location | None = None
    uule: Uule | None = None

    def region(self) -> str:
        """The country as an uppercase ISO code, from country or gl."""
        return self.country or (self.gl or "").upper()

    def _check_region(self, required: bool) -> None:
        if self.country and self.gl and self.country != self.gl.upper():
            raise ValueError("country and gl disagree; send one of them")
        if required and not (self.country or self.gl):
            raise ValueError("country (or gl) is required")
        if self.location and self.uule:
            raise ValueError("location and uule are mutually exclusive")


class AIModeInclude(_Strict):
    html: bool = False
    markdown: bool = False
    expandProducts: bool = False
    googleGoto: bool = False


class AIModePayload(_GoogleFamily):
    prompt: Text
    device: Literal["desktop", "mobile"] = "desktop"
    include: AIModeInclude = AIModeInclude()

    @model_validator(mode="after")
    def _rules(self) -> AIModePayload:
        self._check_region(required=True)
        return self


class AIOverviewInclude(_Strict):
    markdown: bool = False


class GoogleInclude(_Strict):
    html: bool = False
    aioverview: AIOverviewInclude | None = None
    paaAioverview: bool = False
    googleGoto: bool = False


class GooglePayload(_GoogleFamily):
    query: Text | None = None
    url: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    device: Literal["desktop", "mobile", "ios", "android"] = "desktop"
    pages: Pages | None = None
    include: GoogleInclude = GoogleInclude()

    @model_validator(mode="after")
    def _rules(self) -> GooglePayload:
        if self.url is not None:
            clashing = [f for f in ("query", "location", "uule", "pages") if getattr(self, f) is not None]
            if clashing:
                raise ValueError(f"url cannot be combined with {', '.join(clashing)}")
            parts = urlsplit(self.url)
            host = parts.hostname or ""
            if parts.scheme not in ("http", "https") or not (
                host == "google.com" or host.startswith(("google.", "www.google."))
            ):
                raise ValueError("url must be a Google search URL (https://www.google.com/search?q=...)")
            if parts.path != "/search":
                raise ValueError("url must point at /search")
            self._check_region(required=False)
            return self
        if self.query is None:
            raise ValueError("query (or url) is required")
        self._check_region(required=True)
        return self


class GoogleNewsInclude(_Strict):
    html: bool = False


class GoogleNewsPayload(_GoogleFamily):
    query: Text
    device: Literal["desktop", "mobile", "ios", "android"] = "desktop"
    pages: Pages | None = None
    include: GoogleNewsInclude = GoogleNewsInclude()

    @model_validator(mode="after")
    def _rules(self) -> GoogleNewsPayload:
        self._check_region(required=True)
        return self
