#!/usr/bin/env python3
# scripts/openapi.py - writes docs/openapi.json, the OpenAPI 3.1 document of dm-serve
# (served at /v1/openapi.json, embedded in the binary; tests/dm-serve.bats validates every
# response against it). Change the API here, then: make openapi.
import json
S = lambda **k: k
str_ = {"type": "string"}
strn = {"type": ["string", "null"]}
int_ = {"type": "integer"}
intn = {"type": ["integer", "null"]}
numn = {"type": ["number", "null"]}
bool_ = {"type": "boolean"}
def obj(props, required=None, extra=True, desc=None):
    o = {"type": "object", "properties": props, "required": required if required is not None else list(props)}
    if not extra: o["additionalProperties"] = False
    if desc: o["description"] = desc
    return o
def ref(n): return {"$ref": "#/components/schemas/" + n}
def arr(x): return {"type": "array", "items": x}
def nullable(x): return {"oneOf": [x, {"type": "null"}]}

counts = {k: int_ for k in ["inserted", "updated", "deleted", "unchanged", "rejected"]}
schemas = {
 "Error": obj({"error": obj({"code": {"type": "string", "enum": ["bad_request", "unauthorized", "not_found", "method_not_allowed", "conflict", "too_large", "unavailable", "internal"]}, "message": str_})}, desc="Every error: a code a program can test and a message for people."),
 "Health": obj({"live": bool_, "ready": bool_,
    "source": obj({"ok": bool_, "error": str_}, ["ok"]),
    "destination": obj({"ok": bool_, "error": str_, "dm_schema": {"type": "string", "enum": ["present", "absent"]}}, ["ok"]),
    "version": str_}),
 "Mapping": {"oneOf": [
    obj({"kind": {"const": "same"}, "source": str_}, desc="The same table on both sides, columns by name."),
    obj({"kind": {"const": "spec"}, "source": strn, "query": bool_, "where": strn, "uuid_column": strn, "legacy_column": strn,
         "columns": arr(obj({"dest": str_, "kind": {"type": "string", "enum": ["column", "expr", "ref"]}, "value": str_, "entity": str_}, ["dest", "kind", "value"])),
         "excluded": arr(str_)}, desc="From the spec file (dm.conf(5)): the source table or query (the legacy key is the entity's key), the UUID column, each destination column's source.")]},
 "Entity": obj({"entity": str_, "level": int_, "target": str_, "key": arr(str_), "change_column": strn, "group": strn, "parents": arr(str_), "mapping": ref("Mapping")},
    desc="An entity as dm-entities prints it: level is its depth in the destination's foreign keys (load order), group names the entities of a foreign-key cycle loaded together."),
 "Entities": obj({"entities": arr(ref("Entity")), "notes": arr(str_)}),
 "Checkpoint": obj({"entity": str_, "watermark": strn, "state": {"type": "string", "enum": ["complete", "partial"]}, "updated_at": str_, "run": strn}),
 "Checkpoints": obj({"checkpoints": arr(ref("Checkpoint"))}),
 "CheckpointDeleted": obj({"entity": str_, "deleted": {"const": True}}),
 "BaselineEntity": obj({"entity": str_, "source_rows": int_, "destination_rows": int_, "in_both": int_, "only_in_source": int_,
    "only_in_destination": int_, "changed": int_, "differing": int_, "change_column": strn, "newest_change": strn,
    "checkpoint": nullable(obj({"watermark": strn, "state": str_, "updated_at": strn}))}),
 "Baseline": obj({"command": {"const": "baseline"}, "entities": arr(ref("BaselineEntity")),
    "totals": obj({k: int_ for k in ["entities", "source_rows", "destination_rows", "in_both", "only_in_source", "only_in_destination", "changed", "differing"]})},
    desc="Exactly what `dm-migrate --json baseline` prints."),
 "PlanEntity": obj({"entity": str_, "mode": {"type": "string", "enum": ["full", "incremental"]}, "insert": int_, "update": int_, "delete": int_,
    "only_in_destination": intn, "unchanged": int_, "destination_rows": intn,
    "examples": obj({"insert": arr(str_), "update": arr(str_), "only_in_destination": arr(str_)}),
    "delete_guard": nullable(obj({"share_pct": {"type": "number"}, "limit_pct": int_, "trips": bool_})), "note": strn}),
 "Plan": obj({"command": {"const": "plan"}, "delete": bool_, "force": bool_, "max_delete_share": int_, "entities": arr(ref("PlanEntity")),
    "totals": obj({k: int_ for k in ["entities", "insert", "update", "delete", "only_in_destination"]})},
    desc="Exactly what `dm-migrate --json plan` prints."),
 "RunRow": obj(dict({"run": str_, "started_at": str_, "finished_at": strn, "outcome": str_, "live": {"type": ["boolean", "null"]}, "batches": int_,
    "progress_at": strn, "seconds": numn, "rows_per_second": intn, "error": strn}, **counts), desc="An entity's row in dm.run."),
 "Status": obj({"command": {"const": "status"}, "now": {"type": "number"},
    "entities": arr(obj({"entity": str_, "checkpoint": nullable(obj({"watermark": strn, "updated_at": str_, "state": str_, "run": strn})), "last_run": nullable(ref("RunRow"))})),
    "in_progress": arr(obj(dict({"entity": str_, "run": str_, "started_at": strn, "batches": int_, "progress_at": strn, "seconds": numn, "rows_per_second": intn, "lease_expires": str_}, **counts))),
    "follow": arr(obj({"slot": str_, "applied_lsn": str_, "commit_time": strn, "applied_at": strn, "source_lsn": strn, "synced_at": strn,
        "lag_seconds": numn, "lag_bytes": intn, "retained_bytes": intn, "full_entities": arr(str_)},
        desc="A slot followed by dm-migrate follow (dm.follow): the applied position, and how far behind the source as its last batch saw it; full_entities are followed by full comparisons."))},
    desc="Exactly what `dm-migrate --json status` (dm-ckpt --json status) prints."),
 "RunRequest": {"type": "object", "additionalProperties": False, "properties": {
    "entities": {"type": "array", "items": {"type": "string", "minLength": 1}, "description": "Entities to run (default: all), as GET /v1/entities names them."},
    "full": {"type": "boolean", "default": False, "description": "Compare every row, even of entities with a checkpoint."},
    "delete": {"type": "boolean", "default": False, "description": "Also delete the rows no longer in the source (implies full)."},
    "jobs": {"type": "integer", "minimum": 1, "maximum": 64, "description": "Entities migrated at once (dm-migrate -j)."},
    "verify": {"type": "boolean", "default": False, "description": "After the run, dm-migrate verify: the run fails if the sides differ."}}},
 "RunEntity": obj(dict({"entity": str_, "state": {"type": "string", "description": "pending, running, ok, failed, interrupted, loaded, voided, or 'not run'"},
    "batches": int_, "started_at": strn, "finished_at": strn, "progress_at": strn, "seconds": numn, "rows_per_second": intn, "error": strn,
    "progress": nullable({"type": "object", "description": "The entity's latest progress event (rows, rows_per_s, total, eta_s) while the run runs."})}, **counts),
    required=["entity", "state", "progress"]),
 "RunSummary": obj(dict({"id": str_, "origin": {"type": "string", "enum": ["api", "cli"]},
    "state": {"type": "string", "enum": ["running", "succeeded", "failed", "cancelled", "interrupted"]},
    "exit_status": intn, "started_at": str_, "finished_at": strn, "entity_count": int_, "seconds": numn, "rows_per_second": intn, "error": strn}, **counts)),
 "Run": {"allOf": [ref("RunSummary"), obj({"request": nullable({"type": "object"}), "entities": arr(ref("RunEntity"))})]},
 "RunList": obj({"runs": arr(ref("RunSummary")), "next": strn}),
}
def resp(desc, schema=None, ctype="application/json", headers=None):
    r = {"description": desc}
    if schema is not None: r["content"] = {ctype: {"schema": schema}}
    if headers: r["headers"] = headers
    return r
err = lambda d: resp(d, ref("Error"))
auth = {"401": err("No token, or a wrong one.")}
paths = {
 "/v1/health": {"get": {"summary": "Live, and ready when both databases answer", "security": [], "operationId": "health",
    "responses": {"200": resp("Ready.", ref("Health")), "503": resp("Not ready: which side failed, and why.", ref("Health"))}}},
 "/v1/entities": {"get": {"summary": "The entities in load order, as dm-entities knows them", "operationId": "entities",
    "responses": dict({"200": resp("The entities.", ref("Entities")), "503": err("The databases cannot be read.")}, **auth)}},
 "/v1/baseline": {"get": {"summary": "Rows per side, in both, only in one, changed (dm-migrate --json baseline); cached", "operationId": "baseline",
    "parameters": [{"name": "entity", "in": "query", "schema": str_}],
    "responses": dict({"200": resp("The baseline report.", ref("Baseline")), "400": err("Unknown entity."), "503": err("A database cannot be read."), "500": err("The report failed.")}, **auth)}},
 "/v1/plan": {"get": {"summary": "What a run would do (dm-migrate --json plan); cached", "operationId": "plan",
    "parameters": [{"name": "entity", "in": "query", "schema": str_}, {"name": "full", "in": "query", "schema": {"type": "boolean"}}, {"name": "delete", "in": "query", "schema": {"type": "boolean"}}],
    "responses": dict({"200": resp("The plan report.", ref("Plan")), "400": err("Unknown entity, or a parameter that is not a boolean."), "503": err("A database cannot be read."), "500": err("The report failed.")}, **auth)}},
 "/v1/status": {"get": {"summary": "Checkpoints, the last run of each entity, loads in progress (dm-migrate --json status)", "operationId": "status",
    "responses": dict({"200": resp("The status report.", ref("Status")), "503": err("The destination cannot be read.")}, **auth)}},
 "/v1/runs": {
   "post": {"summary": "Start a run: a dm-migrate run, in its own process group", "operationId": "startRun",
    "requestBody": {"required": False, "content": {"application/json": {"schema": ref("RunRequest")}}},
    "responses": dict({"202": resp("Started.", ref("Run"), headers={"Location": {"schema": str_, "description": "/v1/runs/{id}"}}),
        "400": err("Bad JSON, an unknown field, a wrong type, an unknown entity: nothing started."),
        "409": err("Another run holds some of these entities (its hold decides)."), "413": err("The body is larger than 64 KiB."),
        "503": err("The entities cannot be listed."), "500": err("The run could not be started.")}, **auth)},
   "get": {"summary": "Run history, newest first, paged", "operationId": "listRuns",
    "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20}},
                   {"name": "before", "in": "query", "schema": str_, "description": "The id of the last run of the previous page (its next)."}],
    "responses": dict({"200": resp("A page of runs.", ref("RunList")), "400": err("Bad limit.")}, **auth)}},
 "/v1/runs/{id}": {"get": {"summary": "One run: state, per entity counts, rows/s, errors, live progress", "operationId": "getRun",
    "parameters": [{"name": "id", "in": "path", "required": True, "schema": str_}],
    "responses": dict({"200": resp("The run.", ref("Run")), "404": err("No such run.")}, **auth)}},
 "/v1/runs/{id}/cancel": {"post": {"summary": "Stop a run cleanly: what it committed stays, the next run resumes", "operationId": "cancelRun",
    "parameters": [{"name": "id", "in": "path", "required": True, "schema": str_}],
    "responses": dict({"202": resp("Cancelling: the run ends within seconds (state cancelled).", ref("Run")), "404": err("No such run."),
        "409": err("The run has ended, or was not started by this server.")}, **auth)}},
 "/v1/checkpoints": {"get": {"summary": "The checkpoints", "operationId": "checkpoints",
    "responses": dict({"200": resp("The checkpoints.", ref("Checkpoints")), "503": err("The destination cannot be read.")}, **auth)}},
 "/v1/checkpoints/{entity}": {"delete": {"summary": "Forget an entity's checkpoint: its next run compares in full", "operationId": "deleteCheckpoint",
    "parameters": [{"name": "entity", "in": "path", "required": True, "schema": str_}],
    "responses": dict({"200": resp("Deleted.", ref("CheckpointDeleted")), "404": err("No checkpoint for this entity."), "503": err("The destination cannot be read.")}, **auth)}},
 "/v1/events": {"get": {"summary": "Server-Sent Events: the runs' events (those dm-migrate run logs), as JSON",
    "description": "First `event: state` (data: {\"runs\": [Run...]}, the runs in progress), then `event: log` (data: one logfmt event of a run as a JSON object, with its run id) and `event: run` (data: a Run, when its state changes). Each event has an id; a client reconnecting with Last-Event-ID resumes after it. A comment every 15 s keeps the connection open. Browsers: read it with fetch (EventSource cannot send the token).",
    "operationId": "events",
    "parameters": [{"name": "Last-Event-ID", "in": "header", "schema": str_}],
    "responses": dict({"200": resp("The event stream.", {"type": "string"}, "text/event-stream"), "503": err("Too many event clients.")}, **auth)}},
 "/metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4)", "operationId": "metrics",
    "responses": dict({"200": resp("The metrics.", {"type": "string"}, "text/plain")}, **auth)}},
 "/v1/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "responses": dict({"200": resp("OpenAPI 3.1.", {"type": "object"})}, **auth)}},
 "/": {"get": {"summary": "The dashboard: one page, no data in it; it calls the API with the token of its URL fragment (/#token=...)", "security": [], "operationId": "dashboard",
    "responses": {"200": resp("The page.", {"type": "string"}, "text/html")}}},
}
doc = {"openapi": "3.1.0",
 "info": {"title": "dm-serve", "version": "0.1.0",
   "description": "The service face of dm, differential migration for PostgreSQL: the same programs and the same dm schema as dm-migrate. A run started here is a dm-migrate run. Errors are {\"error\": {\"code\", \"message\"}}. Every endpoint but /v1/health and / needs the bearer token (DM_API_TOKEN)."},
 "servers": [{"url": "http://127.0.0.1:8420"}],
 "security": [{"bearer": []}],
 "paths": paths,
 "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": schemas}}
print(json.dumps(doc, indent=1))
