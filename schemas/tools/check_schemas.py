#!/usr/bin/env python3
"""Developer check of the contract documents in schemas/ (optional; the Rust tests are the gate).

    python3 -m venv /tmp/v && /tmp/v/bin/pip install jsonschema openapi-spec-validator
    /tmp/v/bin/python schemas/tools/check_schemas.py

Checks that every `valid` corpus record passes and every `invalid` one fails its group
schema (formats asserted: gb11643, ipv4, ipv6, date-time), that openapi.json is a valid
OpenAPI 3.1 document whose $refs all resolve, and that its examples satisfy their schemas.

Patterns are evaluated with ECMA-262 / Rust `regex` semantics: `$` matches only at the
very end (Python's `$` would also match before a trailing newline).
"""
import datetime
import ipaddress
import json
import pathlib
import re
import sys

import jsonschema
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.validators import extend
from referencing import Registry, Resource

HERE = pathlib.Path(__file__).resolve().parent.parent
GROUPS = ("applicant", "device", "risk")

PROVINCES = {
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
    "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64",
    "65", "71", "81", "82", "83", "91",
}
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK = "10X98765432"
CST = datetime.timezone(datetime.timedelta(hours=8))


def is_gb11643(value):
    if not isinstance(value, str):
        return True
    if len(value) != 18 or not all("0" <= c <= "9" for c in value[:17]):
        return False
    if value[17] not in "0123456789X":
        return False
    if value[:2] not in PROVINCES:
        return False
    try:
        born = datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if born < datetime.date(1900, 1, 1) or born > datetime.datetime.now(CST).date():
        return False
    total = sum(int(c) * w for c, w in zip(value[:17], WEIGHTS))
    return CHECK[total % 11] == value[17]


_OCTET = re.compile(r"(0|[1-9][0-9]{0,2})\Z")


def is_ipv4(value):
    """Like Rust's std::net::Ipv4Addr::from_str: four decimal octets, no leading zeros."""
    if not isinstance(value, str):
        return True
    parts = value.split(".")
    return len(parts) == 4 and all(_OCTET.match(p) and int(p) <= 255 for p in parts)


def is_ipv6(value):
    """Like Rust's std::net::Ipv6Addr::from_str: no zone id, no brackets, ASCII only."""
    if not isinstance(value, str):
        return True
    if not value.isascii() or "%" in value or "/" in value:
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    # an embedded dotted quad must itself be a valid ipv4 (no leading zeros)
    if "." in value and not is_ipv4(value.rsplit(":", 1)[1]):
        return False
    return True


_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})\Z")


def is_date_time(value):
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    try:
        datetime.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def format_checker():
    fc = FormatChecker(formats=())
    fc.checks("gb11643")(is_gb11643)
    fc.checks("ipv4")(is_ipv4)
    fc.checks("ipv6")(is_ipv6)
    fc.checks("date-time")(is_date_time)
    return fc


def _ecma_pattern(validator, pattern, instance, schema):
    if not validator.is_type(instance, "string"):
        return
    rx = re.sub(r"(?<!\\)\$$", r"\\Z", pattern)
    if not re.search(rx, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = extend(Draft202012Validator, {"pattern": _ecma_pattern})


def load(name):
    with open(HERE / name, encoding="utf-8") as f:
        return json.load(f)


def registry():
    reg = Registry()
    for g in GROUPS:
        doc = load(f"{g}.schema.json")
        res = Resource.from_contents(doc)
        reg = reg.with_resource(doc["$id"], res).with_resource(f"{g}.schema.json", res)
    return reg


def check_corpus():
    failures = 0
    counts = {}
    for g in GROUPS:
        schema = load(f"{g}.schema.json")
        Draft202012Validator.check_schema(schema)
        v = EcmaValidator(schema, format_checker=format_checker())
        corpus = load(f"corpus/{g}.json")
        assert set(corpus) == {"valid", "invalid"}, g
        for verdict in ("valid", "invalid"):
            for i, case in enumerate(corpus[verdict]):
                assert set(case) == {"why", "record"}, (g, verdict, i)
                errors = list(v.iter_errors(case["record"]))
                if (verdict == "valid") != (not errors):
                    failures += 1
                    print(f"FAIL {g} {verdict}[{i}] {case['why']}: {[e.message for e in errors][:3]}")
        counts[g] = (len(corpus["valid"]), len(corpus["invalid"]))
    return failures, counts


def check_openapi():
    from urllib.parse import quote

    from openapi_spec_validator import validate
    from openapi_spec_validator.readers import read_from_filename
    from referencing.jsonschema import DRAFT202012

    spec, base_uri = read_from_filename(str(HERE / "openapi.json"))
    validate(spec, base_uri=base_uri)  # structure, and every $ref resolves

    # every example must satisfy its schema (group schemas found by their $id)
    doc_uri = "https://dzl-vault.invalid/schemas/openapi.json"
    reg = registry().with_resource(doc_uri, Resource.from_contents(spec, default_specification=DRAFT202012))
    failures = 0
    checked = 0

    def walk(node, path):
        nonlocal failures, checked
        if isinstance(node, dict):
            if "schema" in node and isinstance(node.get("examples"), dict):
                pointer = quote("/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path + ["schema"]), safe="/~")
                v = EcmaValidator({"$ref": doc_uri + "#" + pointer}, registry=reg, format_checker=format_checker())
                for name, ex in node["examples"].items():
                    checked += 1
                    errs = list(v.iter_errors(ex["value"]))
                    if errs:
                        failures += 1
                        print("FAIL example", "/".join(path), name, [e.message for e in errs][:3])
            for k, val in node.items():
                walk(val, path + [k])
        elif isinstance(node, list):
            for i, val in enumerate(node):
                walk(val, path + [str(i)])

    walk(spec, [])
    return failures, checked


def main():
    failures, counts = check_corpus()
    for g, (nv, ni) in counts.items():
        print(f"corpus {g}: {nv} valid, {ni} invalid")
    if (HERE / "openapi.json").exists():
        f2, n = check_openapi()
        print(f"openapi.json: valid OpenAPI 3.1; {n} examples checked")
        failures += f2
    print("OK" if not failures else f"{failures} FAILURES")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
