"""The OpenAPI document says what the API really answers, beyond what each route declares.

- The key: both ways of sending it as security schemes; 401 and 403 on every route that
  needs a scope (`require_scope`).
- The errors every route can give: 400 for a body that does not parse, 404 where the path names a resource, 409 for changes
  to one, 413 for bodies over the limit, 422 (a validation error list, or one sentence from
  the request checks and the routes), 503 when the database or broker is down. Each is a
  `Problem`: `{"detail": ...}`.
- The request checks (`api.hardening`): no control character in path or query parameters,
  no NUL in JSON strings, written as `pattern`s.
"""

from __future__ import annotations

from typing import Any

#: No control character (the request checks refuse them in the path and the query string).
CONTROL_FREE = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$"
#: No NUL (Postgres text cannot hold one; JSON bodies holding one are refused).
NUL_FREE = "^[^\\u0000]*$"

PROBLEM = {
    "title": "Problem",
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"title": "Detail", "description": "What was wrong, in one sentence (or a list of validation errors)."}},
}
SECURITY_SCHEMES = {
    "bearerKey": {"type": "http", "scheme": "bearer", "description": "An API key: `Authorization: Bearer <key>`."},
    "headerKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "The same key as `X-API-Key`."},
}
ERRORS = {
    "400": "The body could not be parsed (not JSON, or not the declared form).",
    "401": "No key, or an unknown or revoked one.",
    "403": "The key lacks the scope this route needs.",
    "404": "No such resource.",
    "409": "The resource is not in a state that allows this change.",
    "413": "The body is over the upload limit.",
    "422": "The request is invalid: a validation error list, or one sentence.",
    "503": "The database or the broker is unavailable; try again shortly.",
}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _with_pattern(schema: dict[str, Any], pattern: str) -> None:
    """Add `pattern` to a string schema (and to the string members of an anyOf / oneOf)."""
    if schema.get("type") == "string" and "pattern" not in schema and "enum" not in schema \
            and schema.get("format") not in ("binary", "date-time", "date", "uuid"):
        schema["pattern"] = pattern
    for key in ("anyOf", "oneOf", "allOf"):
        for member in schema.get(key, []):
            _with_pattern(member, pattern)
    if "items" in schema:
        _with_pattern(schema["items"], pattern)
    for prop in schema.get("properties", {}).values():
        _with_pattern(prop, pattern)
    if isinstance(schema.get("additionalProperties"), dict):
        _with_pattern(schema["additionalProperties"], pattern)


def _body_schemas(op: dict[str, Any], components: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON request-body schemas of an operation, references resolved (nested ones too)."""
    found, stack, seen = [], [], set()
    for media, content in op.get("requestBody", {}).get("content", {}).items():
        if "json" in media:
            stack.append(content.get("schema", {}))
    while stack:
        schema = stack.pop()
        ref = schema.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            if name not in seen and name in components:
                seen.add(name)
                stack.append(components[name])
            continue
        found.append(schema)
        for key in ("anyOf", "oneOf", "allOf"):
            stack.extend(schema.get(key, []))
        stack.extend(schema.get("properties", {}).values())
        if "items" in schema:
            stack.append(schema["items"])
        if isinstance(schema.get("additionalProperties"), dict):
            stack.append(schema["additionalProperties"])
    return found


def complete(schema: dict[str, Any], scopes: dict[tuple[str, str], tuple | None]) -> dict[str, Any]:
    """Add the answers and rules above to `schema` (FastAPI's document), in place."""
    components = schema.setdefault("components", {})
    models = components.setdefault("schemas", {})
    models["Problem"] = PROBLEM
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            responses = op.setdefault("responses", {})
            wanted = ["422", "503"]
            if scopes.get((method.upper(), path)):
                names = " or ".join(f"`{s}`" for s in scopes[(method.upper(), path)])
                op["security"] = [{"bearerKey": []}, {"headerKey": []}]
                op["description"] = (op.get("description", "") + f"\n\nNeeds an API key with the {names} scope "
                                     "(or `admin`).").strip()
                wanted += ["401", "403"]
            if "{" in path:
                wanted.append("404")
                if method != "get":
                    wanted.append("409")
            if "requestBody" in op:
                wanted += ["400", "413"]
            for code in wanted:
                if code not in responses:
                    responses[code] = _problem(ERRORS[code])
                elif code == "422":
                    for content in responses[code].setdefault("content", {"application/json": {}}).values():
                        old = content.get("schema")
                        if old and old.get("$ref", "").endswith("/Problem"):
                            continue
                        content["schema"] = {"anyOf": [old, {"$ref": "#/components/schemas/Problem"}]} if old \
                            else {"$ref": "#/components/schemas/Problem"}
                    responses[code]["description"] = ERRORS[code]
            for param in op.get("parameters", []):
                if param.get("in") in ("path", "query"):
                    _with_pattern(param.setdefault("schema", {}), CONTROL_FREE)
            for body in _body_schemas(op, models):
                if body.get("type") == "string":
                    _with_pattern(body, NUL_FREE)
    return schema


def install(app) -> None:
    """Make `app.openapi()` return the completed document (built once)."""
    from api.deps import api_routes

    build = app.openapi

    def openapi() -> dict[str, Any]:
        if getattr(app, "_openapi_completed", False):
            return app.openapi_schema
        scopes = {(method, path): found for method, path, found in api_routes(app)}
        app.openapi_schema = complete(build(), scopes)
        app._openapi_completed = True
        return app.openapi_schema

    app.openapi = openapi
