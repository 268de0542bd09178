#!/usr/bin/env python3
"""Validates JSON files against one of schemas/*.schema.json (JSON Schema 2020-12), for convert_cli_test.

  validate_json_schema.py SCHEMA FILE...   prints "OK <count>" or the first error of each invalid file; exit 1 then.
Needs the `jsonschema` package (Debian's python3-jsonschema 4.10, installed by scripts/setup-deps, or 4.18+ with
`referencing`); exits 77 when it is missing so the caller can skip.
"""
import json
import os
import sys

try:
    import jsonschema
except ImportError:
    sys.exit(77)

schema_path = sys.argv[1]
schemas_dir = os.path.dirname(os.path.abspath(schema_path))
schemas = {}
for name in os.listdir(schemas_dir):  # so that a manifest's "$ref": "layout.schema.json" resolves
    if name.endswith(".schema.json"):
        s = json.load(open(os.path.join(schemas_dir, name)))
        schemas[s["$id"]] = s
schema = json.load(open(schema_path))
try:  # jsonschema 4.18+: a registry of the sibling schemas
    from referencing import Registry, Resource
    registry = Registry().with_resources((uri, Resource.from_contents(s)) for uri, s in schemas.items())
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
except ImportError:  # older jsonschema (Debian 12's 4.10): the same store through a RefResolver
    resolver = jsonschema.RefResolver(schema.get("$id", ""), schema, store=schemas)
    validator = jsonschema.Draft202012Validator(schema, resolver=resolver)
bad = 0
for path in sys.argv[2:]:
    errors = sorted(validator.iter_errors(json.load(open(path))), key=lambda e: list(e.path))
    if errors:
        bad += 1
        print("%s: %s at %s" % (path, errors[0].message, "/".join(map(str, errors[0].path))))
print("OK %d" % (len(sys.argv) - 2) if not bad else "%d invalid" % bad)
sys.exit(1 if bad else 0)
