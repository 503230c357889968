"""The OpenAPI 3.1 document served at /openapi.json, built from the pydantic models taskq validates with."""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint
from flask.typing import ResponseReturnValue

from taskq import __version__
from taskq.api.errors import STATUS
from taskq.providers import PAYLOAD_MODELS
from taskq.schemas.schedules import MAX_EVERY_SECONDS
from taskq.schemas.tasks import MAX_DELAY_SECONDS, TaskStatus

bp = Blueprint("openapi", __name__)

REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(_ref("Error"), "Error (see error.code)") for s in statuses}


def _payload_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for task_type, model in PAYLOAD_MODELS.items():
        schema = model.model_json_schema(ref_template=REF + "{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[f"{task_type}Payload"] = schema
    return schemas


def _task_request() -> dict[str, Any]:
    variants = []
    for task_type in PAYLOAD_MODELS:
        variants.append(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["taskType", "payload"],
                "properties": {
                    "taskType": {"const": task_type},
                    "payload": _ref(f"{task_type}Payload"),
                    "priority": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                    "idempotencyKey": {"type": "string", "minLength": 1, "maxLength": 255},
                    "webhook": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["url"],
                        "properties": {"url": {"type": "string", "format": "uri", "maxLength": 2048}},
                    },
                    "runAt": {
                        "type": "string",
                        "format": "date-time",
                        "description": "Not claimable before this time (with a UTC offset); not with "
                        "delaySeconds (taskq's addition)",
                    },
                    "delaySeconds": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": MAX_DELAY_SECONDS,
                        "description": "Not claimable before admission + this (taskq's addition)",
                    },
                },
            }
        )
    return {"oneOf": variants, "discriminator": {"propertyName": "taskType"}}


def _schedule_schemas() -> dict[str, Any]:
    """The schedule request (POST; PATCH takes any subset) and the schedule view with its runs."""
    webhook = {
        "oneOf": [
            {"type": "string", "format": "uri", "maxLength": 2048},
            {
                "type": "object",
                "required": ["url"],
                "properties": {"url": {"type": "string", "format": "uri"}},
            },
        ]
    }
    fields: dict[str, Any] = {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "cron": {
            "type": "string",
            "description": "5 fields (6: seconds first), in timezone; not with everySeconds",
        },
        "everySeconds": {"type": "integer", "minimum": 1, "maximum": MAX_EVERY_SECONDS},
        "timezone": {"type": "string", "default": "UTC", "description": "IANA name, e.g. Europe/Berlin"},
        "tasks": {"type": "array", "minItems": 1, "maxItems": 500, "items": _ref("TaskRequest")},
        "batchWebhook": webhook,
        "paused": {"type": "boolean", "default": False},
    }
    run = {
        "type": "object",
        "required": ["at", "firedAt", "batchId", "admitted", "refused"],
        "properties": {
            "at": {"type": "string", "format": "date-time", "description": "the occurrence fired"},
            "firedAt": {"type": "string", "format": "date-time"},
            "batchId": {"type": ["string", "null"], "format": "uuid"},
            "admitted": {"type": "integer"},
            "refused": {"type": "integer"},
            "refusals": {"type": "object", "additionalProperties": {"type": "integer"}},
            "error": _ref("ErrorBody"),
        },
    }
    schedule = {
        "type": "object",
        "required": ["id", "name", "timezone", "paused", "nextRunAt", "taskCount"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string"},
            "cron": {"type": ["string", "null"]},
            "everySeconds": {"type": ["integer", "null"]},
            "timezone": {"type": "string"},
            "paused": {"type": "boolean"},
            "nextRunAt": {"type": ["string", "null"], "format": "date-time"},
            "firing": {"type": "boolean"},
            "taskCount": {"type": "integer"},
            "batchWebhook": {"type": ["object", "null"]},
            "lastRun": {"oneOf": [_ref("ScheduleRun"), {"type": "null"}]},
            "createdAt": {"type": "string", "format": "date-time"},
            "updatedAt": {"type": "string", "format": "date-time"},
            "tasks": {"type": "array", "items": _ref("TaskRequest")},
            "runs": {"type": "array", "items": _ref("ScheduleRun")},
        },
    }
    return {
        "ScheduleRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "tasks"],
            "properties": fields,
        },
        "ScheduleChange": {"type": "object", "additionalProperties": False, "properties": fields},
        "ScheduleRun": run,
        "Schedule": schedule,
    }


def _components() -> dict[str, Any]:
    nullable_int = {"type": ["integer", "null"]}
    schemas: dict[str, Any] = {
        **_payload_schemas(),
        **_schedule_schemas(),
        "TaskRequest": _task_request(),
        "Task": {
            "type": "object",
            "required": ["id", "taskType", "status", "priority", "createdAt"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "taskType": {"type": "string", "enum": list(PAYLOAD_MODELS)},
                "status": {"type": "string", "enum": [s.value for s in TaskStatus]},  # CANCELED is taskq's
                "priority": {"type": "integer", "minimum": 1, "maximum": 10},
                "createdAt": {"type": "string", "format": "date-time"},
                "latencyMs": nullable_int,
                "idempotencyKey": {"type": ["string", "null"]},
                "runAt": {
                    "type": "string",
                    "format": "date-time",
                    "description": "a delayed task not yet started",
                },
            },
        },
        "Credits": {
            "type": "object",
            "properties": {"creditsToCharge": {"type": "integer"}, "creditsCharged": nullable_int},
        },
        "ErrorBody": {
            "type": "object",
            "required": ["code", "message", "timestamp"],
            "properties": {
                "code": {"type": "string", "enum": sorted({cls.code.value for cls in STATUS})},
                "message": {"type": "string"},
                "details": {},
                "timestamp": {"type": "string", "format": "date-time"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["success", "error"],
            "properties": {"success": {"const": False}, "error": _ref("ErrorBody")},
        },
        "TaskEnvelope": {
            "type": "object",
            "required": ["task", "credits"],
            "properties": {
                "task": _ref("Task"),
                "credits": _ref("Credits"),
                "response": {"type": "object"},
                "webhook": {
                    "type": "object",
                    "properties": {
                        "url": {"type": "string"},
                        "delivered": {"type": "boolean"},
                        "deliveredAt": {"type": ["string", "null"], "format": "date-time"},
                    },
                },
            },
        },
    }
    return {
        "schemas": schemas,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    }


def _paths() -> dict[str, Any]:
    task_id = {
        "name": "taskId",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    created = {
        "type": "object",
        "properties": {"success": {"const": True}, "task": _ref("Task"), "credits": _ref("Credits")},
    }
    batch_result = {
        "type": "object",
        "properties": {
            "success": {"type": "boolean"},
            "index": {"type": "integer"},
            "task": _ref("Task"),
            "credits": _ref("Credits"),
            "error": _ref("ErrorBody"),
        },
    }
    batch_id = {
        "name": "batchId",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    obj = _json({"type": "object"})
    schedule_id = {
        "name": "scheduleId",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    one_schedule = _json(
        {"type": "object", "properties": {"success": {"const": True}, "schedule": _ref("Schedule")}}
    )
    page = [
        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    ]
    extra: dict[str, Any] = {
        "/v1/async/task/{taskId}/cancel": {
            "post": {
                "operationId": "cancelTask",
                "parameters": [task_id],
                "responses": {"200": obj, **_errors(401, 404, 409, 429)},
            }
        },
        "/v1/async/task/{taskId}/deliveries": {
            "get": {
                "operationId": "listTaskDeliveries",
                "parameters": [task_id],
                "responses": {"200": obj, **_errors(401, 404, 429)},
            }
        },
        "/v1/async/task/{taskId}/webhook/redeliver": {
            "post": {
                "operationId": "redeliverTaskWebhook",
                "parameters": [task_id],
                "responses": {"200": obj, **_errors(401, 404, 409, 429)},
            }
        },
        "/v1/async/batch/{batchId}": {
            "get": {
                "operationId": "getBatch",
                "parameters": [batch_id],
                "responses": {"200": obj, **_errors(401, 404, 429)},
            }
        },
        "/v1/async/batch/{batchId}/results": {
            "get": {
                "operationId": "getBatchResults",
                "parameters": [batch_id, *page],
                "responses": {
                    "200": {
                        "description": "Finished results as JSON lines; X-Next-Cursor when more follow",
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 404, 429),
                },
            }
        },
        "/v1/async/batch/{batchId}/cancel": {
            "post": {
                "operationId": "cancelBatch",
                "parameters": [batch_id],
                "responses": {"200": obj, **_errors(401, 404, 429)},
            }
        },
        "/v1/async/batch/{batchId}/retry-failed": {
            "post": {
                "operationId": "retryFailedTasks",
                "parameters": [batch_id],
                "responses": {"200": obj, **_errors(401, 404, 422, 429)},
            }
        },
        "/v1/async/schedules": {
            "post": {
                "operationId": "createSchedule",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ScheduleRequest")}},
                },
                "responses": {"200": one_schedule, **_errors(400, 401, 413, 415, 429)},
            },
            "get": {
                "operationId": "listSchedules",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "success": {"const": True},
                                "schedules": {"type": "array", "items": _ref("Schedule")},
                            },
                        }
                    ),
                    **_errors(401, 429),
                },
            },
        },
        "/v1/async/schedules/{scheduleId}": {
            "get": {
                "operationId": "getSchedule",
                "parameters": [schedule_id],
                "responses": {"200": one_schedule, **_errors(401, 404, 429)},
            },
            "patch": {
                "operationId": "updateSchedule",
                "parameters": [schedule_id],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ScheduleChange")}},
                },
                "responses": {"200": one_schedule, **_errors(400, 401, 404, 413, 415, 429)},
            },
            "delete": {
                "operationId": "deleteSchedule",
                "parameters": [schedule_id],
                "responses": {"200": obj, **_errors(401, 404, 429)},
            },
        },
        "/v1/async/tasks": {
            "get": {
                "operationId": "listTasks",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "enum": [status.value for status in TaskStatus],
                        },
                    },
                    {
                        "name": "taskType",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(PAYLOAD_MODELS)},
                    },
                    {
                        "name": "priority",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10},
                    },
                    {"name": "batchId", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "createdAfter",
                        "in": "query",
                        "schema": {"type": "string", "format": "date-time"},
                    },
                    *page,
                ],
                "responses": {"200": obj, **_errors(400, 401, 429)},
            }
        },
    }
    return extra | {
        "/v1/async/task": {
            "post": {
                "operationId": "createAsyncTask",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("TaskRequest")}},
                },
                "responses": {"200": _json(created), **_errors(400, 401, 403, 409, 413, 415, 429)},
            }
        },
        "/v1/async/task/batch": {
            "post": {
                "operationId": "createBatchAsyncTasks",
                "parameters": [
                    {
                        "name": "batchWebhook",
                        "in": "query",
                        "required": False,
                        "description": "URL for one signed batch.completed event (taskq's addition)",
                        "schema": {"type": "string", "format": "uri"},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 500,
                                "items": _ref("TaskRequest"),
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "success": {"const": True},
                                "summary": {
                                    "type": "object",
                                    "properties": {
                                        "total": {"type": "integer"},
                                        "succeeded": {"type": "integer"},
                                        "failed": {"type": "integer"},
                                    },
                                },
                                "results": {"type": "array", "items": batch_result},
                            },
                        }
                    ),
                    **_errors(401, 413, 415, 422, 429),
                },
            }
        },
        "/v1/async/task/{taskId}": {
            "get": {
                "operationId": "getTaskStatus",
                "parameters": [task_id],
                "responses": {"200": _json(_ref("TaskEnvelope")), **_errors(401, 404, 429)},
            }
        },
        "/v1/async/status": {
            "get": {
                "operationId": "getAsyncStatus",
                "responses": {"200": _json({"type": "object"}), **_errors(401, 429)},
            }
        },
        "/v1/async/queue": {
            "delete": {
                "operationId": "clearAsyncQueue",
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"success": {}, "cleared": {"type": "integer"}}}
                    ),
                    **_errors(401, 429),
                },
            }
        },
        "/v1/credits": {
            "get": {
                "operationId": "getCredits",
                "responses": {"200": _json({"type": "object"}), **_errors(401, 429)},
            }
        },
    }


def _int_header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "integer"}}


CONCURRENCY_HEADERS = {
    "X-Concurrency-Limit": _int_header(
        "Concurrent calls the organization may have (sync calls and PROCESSING tasks)"
    ),
    "X-Concurrency-Current": _int_header("Slots in use, this call included"),
    "X-Concurrency-Remaining": _int_header("Slots left"),
}
CREDIT_HEADERS = {
    "X-Credits-Charged": _int_header("Credits this call cost (the async price + the sync surcharge)"),
    "X-Credits-Remaining": _int_header("The balance less every reservation, after this call"),
}


def _monitor_paths() -> dict[str, Any]:
    """POST /v1/monitor/*: the provider payload as the body, answered when the call finished."""
    from taskq.api.monitor import PATHS

    paths: dict[str, Any] = {}
    refused = {"content": {"application/json": {"schema": _ref("Error")}}, "headers": CONCURRENCY_HEADERS}
    for path, task_type in PATHS.items():
        result = {
            "type": "object",
            "required": ["success", "result"],
            "properties": {"success": {"const": True}, "result": {"type": "object"}},
        }
        paths[f"/v1/monitor/{path}"] = {
            "post": {
                "operationId": "monitor" + "".join(part.title() for part in path.split("/")),
                "description": f"Synchronous {task_type.value} call, run by a worker through the queue "
                "ahead of every async task; waits up to 5 minutes.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(f"{task_type.value}Payload")}},
                },
                "responses": {
                    "200": {**_json(result), "headers": {**CONCURRENCY_HEADERS, **CREDIT_HEADERS}},
                    **_errors(400, 401, 413, 415),
                    "403": {"description": "INSUFFICIENT_CREDITS", **refused},
                    "429": {"description": "CONCURRENCY_LIMIT_EXCEEDED or RATE_LIMIT_EXCEEDED", **refused},
                    **_errors(499, 500),
                },
            }
        }
    goto = {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {"url": {"type": "string", "format": "uri", "maxLength": 4096}},
    }
    link = {"type": "object", "properties": {"url": {"type": "string"}, "redirectLink": {"type": "string"}}}
    resolved = {"type": "object", "properties": {"success": {"const": True}, "result": link}}
    paths["/v1/monitor/google/goto"] = {
        "post": {
            "operationId": "resolveGoogleGoto",
            "description": "Resolve a Google /goto or /url redirect link; free, takes no concurrency slot.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": goto}}},
            "responses": {"200": _json(resolved), **_errors(400, 401, 415, 429, 502)},
        }
    }
    models = [
        "aimode",
        "aioverview",
        "chatgpt",
        "copilot",
        "gemini",
        "google",
        "googlenews",
        "grok",
        "perplexity",
    ]
    codes = {"type": "array", "items": {"type": "string", "pattern": "^[A-Z]{2}$"}}
    state = {"code": {"type": "string"}, "name": {"type": "string"}}
    states = {"type": "array", "items": {"type": "object", "required": ["code", "name"], "properties": state}}
    paths["/v1/countries"] = {
        "get": {
            "operationId": "getCountries",
            "parameters": [{"name": "model", "in": "query", "schema": {"type": "string", "enum": models}}],
            "responses": {"200": _json(codes), **_errors(400, 401, 429)},
        }
    }
    paths["/v1/states"] = {
        "get": {
            "operationId": "getStates",
            "parameters": [
                {
                    "name": "country",
                    "in": "query",
                    "schema": {"type": "string", "pattern": "^[A-Z]{2}$", "default": "US"},
                }
            ],
            "responses": {"200": _json(states), **_errors(400, 401, 429)},
        }
    }
    return paths


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "taskq async-task and monitor API", "version": __version__},
        "security": [{"bearer": []}],
        "paths": _paths() | _monitor_paths(),
        "components": _components(),
    }


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return document()
