#!/usr/bin/env python3
"""Validates JSON files against one of schemas/*.schema.json (JSON Schema 2020-12), for convert_cli_test.

  validate_json_schema.py SCHEMA FILE...   prints "OK <count>" or the first error of each invalid file; exit 1 then.
Needs the `jsonschema` package (4.18+, with `referencing`); exits 77 when it is missing so the caller can skip.
"""
import json
import os
import sys

try:
    import jsonschema
    from referencing import Registry, Resource
except ImportError:
    sys.exit(77)

schema_path = sys.argv[1]
schemas_dir = os.path.dirname(os.path.abspath(schema_path))
registry = Registry()
for name in os.listdir(schemas_dir):  # so that a manifest's "$ref": "layout.schema.json" resolves
    if name.endswith(".schema.json"):
        s = json.load(open(os.path.join(schemas_dir, name)))
        registry = registry.with_resource(s["$id"], Resource.from_contents(s))
validator = jsonschema.Draft202012Validator(json.load(open(schema_path)), registry=registry)
bad = 0
for path in sys.argv[2:]:
    errors = sorted(validator.iter_errors(json.load(open(path))), key=lambda e: list(e.path))
    if errors:
        bad += 1
        print("%s: %s at %s" % (path, errors[0].message, "/".join(map(str, errors[0].path))))
print("OK %d" % (len(sys.argv) - 2) if not bad else "%d invalid" % bad)
sys.exit(1 if bad else 0)
