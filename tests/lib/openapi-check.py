#!/usr/bin/env python3
"""openapi-check.py OPENAPI METHOD PATH STATUS [BODY_FILE [CONTENT_TYPE]]

Checks one response of dm-serve against the OpenAPI document: the path and
method are documented, the status is one of the operation's responses, and a
JSON body validates against its schema (python3-jsonschema). Exit 0 if so,
1 with what is wrong. Used by the tests only.
"""
import json
import re
import sys

import jsonschema


def inline(node, doc, depth=0):
    """The schema with every local $ref replaced by what it points to."""
    if depth > 50:
        raise ValueError("$ref nesting too deep")
    if isinstance(node, dict):
        if "$ref" in node and node["$ref"].startswith("#/"):
            target = doc
            for part in node["$ref"][2:].split("/"):
                target = target[part]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            merged = inline(target, doc, depth + 1)
            return {**merged, **inline(rest, doc, depth + 1)} if rest else merged
        return {k: inline(v, doc, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [inline(v, doc, depth + 1) for v in node]
    return node


def main():
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    doc = json.load(open(sys.argv[1]))
    method, path, status = sys.argv[2].lower(), sys.argv[3].split("?")[0], sys.argv[4]
    body = sys.argv[5] if len(sys.argv) > 5 else None
    ctype = (sys.argv[6] if len(sys.argv) > 6 else "application/json").split(";")[0].strip()
    op = None
    for template, item in doc["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path) and method in item:
            op = item[method]
            break
    if op is None:
        print(f"{method.upper()} {path}: not in the OpenAPI document")
        return 1
    resp = op["responses"].get(status)
    if resp is None:
        print(f"{method.upper()} {path}: status {status} is not documented (documented: {', '.join(op['responses'])})")
        return 1
    content = resp.get("content", {})
    if body is None or not content:
        return 0
    if ctype not in content:
        print(f"{method.upper()} {path} {status}: content type {ctype} is not documented ({', '.join(content)})")
        return 1
    schema = inline(content[ctype]["schema"], doc)
    if ctype != "application/json":
        return 0
    try:
        value = json.load(open(body))
    except ValueError as e:
        print(f"{method.upper()} {path} {status}: the body is not JSON: {e}")
        return 1
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    for e in errors[:5]:
        print(f"{method.upper()} {path} {status}: at /{'/'.join(str(p) for p in e.path)}: {e.message[:300]}")
    return 1 if errors else 0


sys.exit(main())
