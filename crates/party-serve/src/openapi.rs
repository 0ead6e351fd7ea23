//! The OpenAPI 3 description of the JSON API, served at `/api/v1/openapi.json`. The API tests
//! call every operation described here against a live server and check that each answer's
//! status is one the document lists, and that no route exists that it leaves out.

use serde_json::{Value, json};

/// The OpenAPI 3.0 document of `/api/v1`.
pub fn document() -> Value {
    let error = json!({"$ref": "#/components/responses/Error"});
    let id = json!({"name": "id", "in": "path", "required": true,
        "description": "A task id: 24 hexadecimal characters.",
        "schema": {"type": "string", "pattern": "^[0-9a-f]{24}$"}});
    let task = |desc: &str| {
        json!({"description": desc,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Task"}}}})
    };
    let queue = json!({"name": "name", "in": "path", "required": true,
        "description": "A queue name.", "schema": {"type": "string"}});
    let queue_answer = json!({"description": "The queue as it is now",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Queue"}}}});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "party",
            "version": "1",
            "description": "A durable task scheduler's HTTP API. Every operation needs \
                `Authorization: Bearer TOKEN`; a read-only token may call the GET operations \
                only. Errors are JSON objects with an `error` message."
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/tasks": {
                "get": {
                    "operationId": "listTasks",
                    "summary": "Tasks, soonest due first, a page at a time",
                    "parameters": [
                        {"name": "state", "in": "query", "schema": {"$ref": "#/components/schemas/State"}},
                        {"name": "handler", "in": "query", "schema": {"type": "string"}},
                        {"name": "queue", "in": "query", "schema": {"type": "string"}},
                        {"name": "data", "in": "query", "description": format!("Only tasks whose data has this top-level field with this value, written `FIELD=VALUE` (`customer=acme`); the same filter may be written `data.FIELD=VALUE` (`data.customer=acme`). A string matches its text, a number its digits as stored, a boolean `true` or `false`; null, objects and arrays never match. One data filter per request. No index covers task data, so a page with a data filter examines at most {} tasks after its cursor: it may then hold fewer than `limit` tasks, even none, with a `next_cursor` to search on from there.", party::policy::DATA_FILTER_SCAN), "schema": {"type": "string", "example": "customer=acme"}},
                        {"name": "limit", "in": "query", "description": format!("The most tasks the page holds. A page also holds at most {} MiB of tasks (their data, last error, rule and unique key as stored, and about 1 KiB each for the rest): it ends before the task that would pass that, with fewer than `limit` tasks (one at least), and its `next_cursor` continues at that task.", party::policy::PAGE_BYTES >> 20), "schema": {"type": "integer", "minimum": 1, "maximum": party::validate::MAX_PAGE_LIMIT, "default": party::policy::DEFAULT_LIST_LIMIT}},
                        {"name": "cursor", "in": "query", "description": "The `next_cursor` of the previous page.", "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {"description": "One page", "content": {"application/json": {"schema": {
                            "type": "object", "required": ["tasks", "next_cursor"],
                            "properties": {
                                "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
                                "next_cursor": {"type": "string", "nullable": true, "description": "Where the next page starts; null on the last page. A page may hold fewer than `limit` tasks and still have a next page (large tasks, or a data filter): follow `next_cursor` until it is null to see every task once."}
                            }}}}},
                        "400": error, "401": error
                    }
                },
                "post": {
                    "operationId": "addTask",
                    "summary": "Add a task",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewTask"}}}},
                    "responses": {
                        "201": task("The task as stored"),
                        "400": error, "401": error, "403": error,
                        "409": {"$ref": "#/components/responses/Duplicate"},
                        "413": error
                    }
                }
            },
            "/tasks/bulk": {
                "post": {
                    "operationId": "addTasks",
                    "summary": "Add many tasks in one transaction: all or none",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {
                        "type": "array", "minItems": 1, "maxItems": crate::api::MAX_BULK,
                        "items": {"$ref": "#/components/schemas/NewTask"}}}}},
                    "responses": {
                        "201": {"description": "The new ids, in the order given", "content": {"application/json": {"schema": {
                            "type": "object", "required": ["ids"],
                            "properties": {"ids": {"type": "array", "items": {"type": "string"}}}}}}},
                        "400": error, "401": error, "403": error,
                        "409": {"$ref": "#/components/responses/Duplicate"},
                        "413": error
                    }
                }
            },
            "/tasks/{id}": {
                "get": {
                    "operationId": "getTask",
                    "summary": "One task with its latest runs",
                    "description": format!("The task with its latest {n} runs in `runs` (oldest first), `runs_total` (how many runs it has, counted up to {cap}: with `runs_total_exact` false it has more than `runs_total`) and `runs_next_cursor`: pass it as `cursor` to `GET /tasks/{{id}}/runs` for the older runs (null when `runs` holds them all). A task recurring every minute keeps half a million runs; `GET /tasks/{{id}}/gaps` compares all of them with its schedule.", n = party::policy::RECENT_RUNS, cap = party::policy::RUNS_COUNTED),
                    "parameters": [id],
                    "responses": {"200": {"description": "The task", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskWithRuns"}}}}, "400": error, "401": error, "404": error}
                }
            },
            "/tasks/{id}/runs": {
                "get": {
                    "operationId": "taskRuns",
                    "summary": "A task's runs, newest first, a page at a time",
                    "parameters": [
                        id,
                        {"name": "cursor", "in": "query", "description": "The `next_cursor` of the previous page, or the task's `runs_next_cursor`; without it, the page starts at the latest run. Following `next_cursor` until it is null reads every run once, even while new runs are recorded.", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "description": "The most runs the page holds.", "schema": {"type": "integer", "minimum": 1, "maximum": party::policy::RUNS_PAGE_MAX, "default": party::policy::RECENT_RUNS}}
                    ],
                    "responses": {
                        "200": {"description": "One page", "content": {"application/json": {"schema": {
                            "type": "object", "required": ["runs", "next_cursor", "runs_total", "runs_total_exact"],
                            "properties": {
                                "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}, "description": "Newest first"},
                                "next_cursor": {"type": "string", "nullable": true, "description": "Where the older runs continue; null on the page with the oldest run"},
                                "runs_total": {"type": "integer", "description": format!("How many runs the task has, counted up to {}", party::policy::RUNS_COUNTED)},
                                "runs_total_exact": {"type": "boolean", "description": "False: the task has more than `runs_total` runs"}
                            }}}}},
                        "400": error, "401": error, "404": error
                    }
                }
            },
            "/tasks/{id}/cancel": {
                "post": {
                    "operationId": "cancelTask",
                    "summary": "Cancel a scheduled, retrying or dead task",
                    "parameters": [id],
                    "responses": {"200": task("The cancelled task"), "400": error, "401": error, "403": error, "404": error, "409": error}
                }
            },
            "/tasks/{id}/retry": {
                "post": {
                    "operationId": "retryTask",
                    "summary": "Make a dead, cancelled, retrying or scheduled task due now",
                    "parameters": [id],
                    "responses": {"200": task("The task, due now"), "400": error, "401": error, "403": error, "404": error, "409": error}
                }
            },
            "/tasks/{id}/next": {
                "get": {
                    "operationId": "nextOccurrences",
                    "summary": "The next occurrences of a task with a rule",
                    "parameters": [id, {"name": "count", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": party::validate::MAX_OCCURRENCES, "default": 5}}],
                    "responses": {
                        "200": {"description": "Instants, RFC 3339", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "string", "format": "date-time"}}}}},
                        "400": error, "401": error, "404": error
                    }
                }
            },
            "/tasks/{id}/gaps": {
                "get": {
                    "operationId": "occurrenceGaps",
                    "summary": "Expected occurrences that are missing, doubled or unexpected in the run history",
                    "parameters": [id],
                    "responses": {
                        "200": {"description": "The report", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Gaps"}}}},
                        "400": error, "401": error, "404": error
                    }
                }
            },
            "/stats": {
                "get": {
                    "operationId": "stats",
                    "summary": "Counts by state and handler, the oldest due task, throughput, live workers",
                    "responses": {
                        "200": {"description": "As `party stats --json`", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Stats"}}}},
                        "401": error
                    }
                }
            },
            "/queues": {
                "get": {
                    "operationId": "listQueues",
                    "summary": "Every queue with tasks or controls: tasks by state, due tasks, paused or not, limits",
                    "responses": {
                        "200": {"description": "As `party queue list --json`", "content": {"application/json": {"schema": {"type": "object", "properties": {"queues": {"type": "array", "items": {"$ref": "#/components/schemas/Queue"}}}}}}},
                        "401": error
                    }
                }
            },
            "/queues/{name}/pause": {
                "post": {
                    "operationId": "pauseQueue",
                    "summary": "Stop claiming the queue's tasks on every worker; running ones finish",
                    "parameters": [queue.clone()],
                    "responses": {"200": queue_answer.clone(), "400": error, "401": error, "403": error}
                }
            },
            "/queues/{name}/resume": {
                "post": {
                    "operationId": "resumeQueue",
                    "summary": "Claim a paused queue's tasks again",
                    "parameters": [queue.clone()],
                    "responses": {"200": queue_answer.clone(), "400": error, "401": error, "403": error}
                }
            },
            "/queues/{name}/limits": {
                "put": {
                    "operationId": "limitQueue",
                    "summary": "Set the queue's limits across every worker, replacing those it had ({} removes them)",
                    "parameters": [queue],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Limits"}}}},
                    "responses": {"200": queue_answer, "400": error, "401": error, "403": error, "413": error}
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}, "401": error}
                }
            }
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": {"description": "What was wrong", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Duplicate": {"description": "A recurring task with the same handler and data exists (or a state conflict)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"},
                    "existing_id": {"type": "string", "description": "For a duplicate recurring task: the task that already exists"}}},
                "State": {"type": "string", "enum": ["scheduled", "running", "retrying", "done", "dead", "cancelled"]},
                "NewTask": {"type": "object", "required": ["handler"], "additionalProperties": false, "properties": {
                    "handler": {"type": "string"},
                    "data": {"type": "object"},
                    "at": {"type": "string", "format": "date-time", "description": "First run, not in the past: RFC 3339 with seconds and `Z` or an offset `±HH:MM`, e.g. `2027-01-31T09:00:00Z`; other ISO 8601 forms are refused", "example": "2027-01-31T09:00:00Z"},
                    "in": {"type": "string", "description": "First run after this long, e.g. 90s, 2h"},
                    "every": {"type": "string", "description": "Recur at this interval"},
                    "cron": {"type": "string"},
                    "tz": {"type": "string", "description": "IANA time zone of the rule"},
                    "monthly_on": {"type": "integer", "minimum": 1, "maximum": 31},
                    "at_time": {"type": "string", "description": "HH:MM, with monthly_on"},
                    "missed": {"type": "string", "enum": ["all", "latest", "skip"]},
                    "nonexistent": {"type": "string", "enum": ["shift", "skip"]},
                    "repeated": {"type": "string", "enum": ["first", "second"]},
                    "max_attempts": {"type": "integer", "minimum": 1},
                    "queue": {"type": "string"},
                    "priority": {"type": "integer"},
                    "unique_key": {"type": "string", "description": "Refused (409) while a live task of the handler has this key"},
                    "unique_for": {"type": "string", "description": "With unique_key: also refused while one finished this long ago, e.g. 1h"}}},
                "Run": {"type": "object", "properties": {
                    "attempt": {"type": "integer"}, "timestamp": {"type": "string", "format": "date-time"},
                    "started_at": {"type": "string", "format": "date-time"}, "finished_at": {"type": "string", "format": "date-time"},
                    "outcome": {"type": "string", "enum": ["succeeded", "failed", "timed_out", "lost", "cancelled"]},
                    "error": {"type": "string", "nullable": true}, "worker": {"type": "string"}}},
                "Task": {"type": "object", "required": ["id", "handler", "data", "state"], "properties": {
                    "id": {"type": "string"}, "handler": {"type": "string"}, "data": {"type": "object"},
                    "timestamp": {"type": "string", "format": "date-time"},
                    "last_run_on": {"type": "string", "format": "date-time", "nullable": true},
                    "attempts": {"type": "integer"}, "is_recurring": {"type": "boolean"},
                    "state": {"$ref": "#/components/schemas/State"}, "queue": {"type": "string"},
                    "priority": {"type": "integer"}, "max_attempts": {"type": "integer"},
                    "last_error": {"type": "string", "nullable": true},
                    "rule": {"type": "object", "nullable": true},
                    "due_at": {"type": "string", "format": "date-time"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "finished_at": {"type": "string", "format": "date-time", "nullable": true},
                    "worker": {"type": "string", "nullable": true},
                    "unique_key": {"type": "string", "nullable": true},
                    "cancel_requested": {"type": "boolean", "description": "Cancelled while running: its worker is stopping it"},
                    "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}, "description": "Left out of listings"}}},
                "TaskWithRuns": {"allOf": [{"$ref": "#/components/schemas/Task"}, {"type": "object", "required": ["runs_total", "runs_total_exact", "runs_next_cursor"], "properties": {
                    "runs_total": {"type": "integer", "description": "How many runs the task has, counted up to a cap"},
                    "runs_total_exact": {"type": "boolean", "description": "False: the task has more than `runs_total` runs"},
                    "runs_next_cursor": {"type": "string", "nullable": true, "description": "The `cursor` of `GET /tasks/{id}/runs` for the runs older than `runs`; null when `runs` holds every run"}}}]},
                "Gaps": {"type": "object", "properties": {
                    "expected": {"type": "integer"}, "truncated": {"type": "boolean"},
                    "missing": {"type": "array", "items": {"type": "string"}},
                    "doubled": {"type": "array"}, "unexpected": {"type": "array", "items": {"type": "string"}}}},
                "Limits": {"type": "object", "additionalProperties": false, "properties": {
                    "concurrency": {"type": "integer", "minimum": 1, "maximum": party::validate::MAX_CONCURRENCY, "description": "At most this many running at once across every worker (per key with per)"},
                    "rate": {"type": "string", "description": "At most COUNT starts in any window of PERIOD, e.g. 10/1s, 100/1m, 1000/1h (per key with per)"},
                    "per": {"type": "string", "description": "A top-level data field the limits hold per value of, e.g. data.customer"}}},
                "Queue": {"type": "object", "properties": {
                    "name": {"type": "string"}, "paused": {"type": "boolean"},
                    "limits": {"$ref": "#/components/schemas/Limits"},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "Tasks per state"},
                    "due": {"type": "integer", "description": "Scheduled or retrying tasks due now"}}},
                "Stats": {"type": "object", "properties": {
                    "by_state": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "by_handler": {"type": "object"},
                    "oldest_due": {"type": "string", "format": "date-time", "nullable": true},
                    "finished_last_minute": {"type": "integer"},
                    "unhandled": {"type": "array"}, "workers": {"type": "array"},
                    "stuck_count": {"type": "integer"}, "stuck": {"type": "array"}}}
            }
        }
    })
}
