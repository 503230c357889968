"""Canned upstream failures for the provider simulator: each provider's error statuses, headers and bodies."""

from __future__ import annotations

import math
from typing import Any

from taskq.simulator.bodies import Ask, Reply, json_reply

_HTML_401 = (
    "<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n"
    "<center><h1>401 Authorization Required</h1></center>\r\n<hr><center>openresty</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def failure(ask: Ask, kind: str) -> Reply:
    """A failure of this kind (401, 400, 410, 429, quota, 500, 503, malformed) in the flavor's shape."""
    if kind == "malformed":
        if ask.flavor == "rss":
            return Reply(200, b"<html><body>[simulated] unusual traffic</body></html>", "text/html")
        return Reply(200, b'{"id": "sim_truncated", "output": [{"type": "mess')
    if ask.flavor == "gemini":
        return _gemini_failure(kind)
    if ask.flavor == "serpapi":
        return _serpapi_failure(kind)
    if ask.flavor == "rss":
        status = {"quota": 429}.get(kind) or int(kind)
        return Reply(
            status, f"<html><title>{status} [simulated]</title></html>".encode(), "text/html", _wait(status)
        )
    if kind == "401" and ask.flavor == "perplexity":
        return Reply(401, _HTML_401.encode(), "text/html")
    if ask.flavor == "xai" and kind in ("400", "410"):
        message = {
            "400": "Incorrect API key provided: sim***. [simulated]",
            "410": "Live search is deprecated. Please switch to the Agent Tools API. [simulated]",
        }[kind]
        return json_reply(int(kind), {"code": "Client specified an invalid argument", "error": message})
    status, kind_code, message = {
        "400": (400, "invalid_request_error", "Invalid value for 'input'. [simulated]"),
        "401": (401, "invalid_api_key", "Incorrect API key provided. [simulated]"),
        "410": (410, "gone", "This endpoint is gone. [simulated]"),
        "429": (429, "rate_limit_exceeded", "Rate limit reached for requests. [simulated]"),
        "quota": (429, "insufficient_quota", "You exceeded your current quota. [simulated]"),
        "500": (500, "server_error", "The server had an error processing your request. [simulated]"),
        "503": (503, "server_error", "The engine is currently overloaded. [simulated]"),
    }[kind]
    error = {"message": message, "type": kind_code, "param": None, "code": kind_code}
    return json_reply(status, {"error": error}, **_wait(status))


def _wait(status: int) -> dict[str, str]:
    if status == 429:
        return {"retry-after": "1", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"}
    return {}


def _gemini_failure(kind: str) -> Reply:
    """Google RPC envelope; a 429 says how long to wait in RetryInfo, never in a Retry-After header."""
    simple = {
        "401": (401, "UNAUTHENTICATED", "Method doesn't allow unregistered callers."),
        "410": (404, "NOT_FOUND", "models/unknown is not found."),
        "500": (500, "INTERNAL", "An internal error has occurred."),
        "503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    }
    details: list[dict[str, Any]] = []
    if kind in simple:
        status, rpc, message = simple[kind]
    elif kind == "400":
        status, rpc, message = 400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."
        details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
    else:  # 429 is a per-minute quota (retry), quota a per-day one (fail fast)
        status, rpc, message = (
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota. Please retry in 1.5s.",
        )
        per = "Minute" if kind == "429" else "Day"
        violation = {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
            "quotaId": f"GenerateRequestsPer{per}PerProjectPerModel-FreeTier",
        }
        details = [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"},
        ]
    error = {"code": status, "message": f"{message} [simulated]", "status": rpc, "details": details}
    return json_reply(status, {"error": error})


def _serpapi_failure(kind: str) -> Reply:
    status, message = {
        "400": (400, "Missing query `q` parameter."),
        "401": (401, "Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key"),
        "410": (410, "Your search has expired."),
        "429": (429, "You have exceeded the hourly throughput limit for your plan."),
        "quota": (429, "Your account has run out of searches."),
        "500": (500, "Internal server error."),
        "503": (503, "We couldn't get valid results for this search. Please try again later."),
    }[kind]
    body: dict[str, Any] = {"error": f"{message} [simulated]"}
    if status >= 500:
        body["search_metadata"] = {"status": "Error"}
    return json_reply(status, body, **_wait(status) if kind == "429" else {})


def rate_limited(ask: Ask, wait: float, limit: float) -> Reply:
    """Over the limit (limit requests/s; the next request may come in `wait` s), in the flavor's shape."""
    seconds = max(1, math.ceil(wait))
    if ask.flavor == "gemini":
        violation = {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
            "quotaValue": f"{limit * 60:g}",
        }
        details = [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait:.6f}s"},
        ]
        message = f"You exceeded your current quota. Please retry in {wait:.6f}s. [simulated]"
        error = {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": details}
        return json_reply(429, {"error": error})
    if ask.flavor == "serpapi":
        message = "You have exceeded the hourly throughput limit for your plan. [simulated]"
        return json_reply(429, {"error": message})
    if ask.flavor == "rss":
        return Reply(429, b"<html><title>429 Too Many Requests [simulated]</title></html>", "text/html",
                     {"retry-after": str(seconds)})  # fmt: skip
    message = f"Rate limit reached for requests: limit {limit * 60:g} per min. [simulated]"
    error = {"message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    if ask.flavor == "perplexity":
        return json_reply(429, {"error": error}, **{"retry-after": str(seconds)})
    headers = {
        "retry-after": str(seconds),
        "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
        "x-ratelimit-limit-requests": f"{limit * 60:g}",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": f"{max(1, math.ceil(wait * 1000))}ms",
    }
    return json_reply(429, {"error": error}, **headers)
