"""Schemathesis hooks for dzl-vault (loaded with SCHEMATHESIS_HOOKS=dzl_hooks).

* Signing: every request of a signed operation carries the four X-DZL-*
  headers of docs/api.md ("Signed requests"), computed over the exact bytes
  that go on the wire:

      canonical = METHOD \\n PATH_AND_QUERY \\n TIMESTAMP \\n NONCE \\n hex(sha256(body))
      X-DZL-Signature = base64(HMAC-SHA256(secret, canonical))

  The auth provider marks a case with the tenant's key id; `before_call`
  prepares the request exactly as `requests` will send it and signs that,
  with a fresh nonce and timestamp every time the case is sent (so re-sends
  while shrinking are never replays). A case without our key id (the
  `ignored_auth` probes, which strip or forge the headers) goes unsigned.
* Tenants: platform routes sign as the platform, funder routes as the
  funder, subject access as the operator (credentials from dzl-fixture's JSON
  line, in the file named by DZL_FIXTURE).
* Data: resident id numbers are generated with a valid GB 11643 check digit
  (format `gb11643`), and most positive deposits are made acceptable (a
  current consent covering the groups, grants to the fixture's funder), so
  the stateful phase has real codes to redeem.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import secrets

import requests
import schemathesis
from hypothesis import strategies as st

with open(os.environ["DZL_FIXTURE"], encoding="utf-8") as f:
    FIXTURE = json.loads(f.readline())
BASE_URL = FIXTURE["base_url"]
TENANTS = FIXTURE["tenants"]
OURS = {t["key_id"]: t["secret"] for t in TENANTS.values()}
# Canary identity, as in crates/dzl-testkit (dzl_testkit::canary).
CANARY = {"name": "欧阳金丝雀", "id_number": "11010519491231002X", "phone": "13912345678"}
UNSIGNED = {"/v1/openapi.json", "/v1/receipt-keys", "/healthz", "/readyz", "/metrics"}
PLACEHOLDER = "unsigned"
# How often a positive deposit is made acceptable (the rest stay as generated).
REPAIR = float(os.environ.get("DZL_REPAIR_DEPOSITS", "0.7"))


def tenant_for(path: str) -> dict | None:
    if path in UNSIGNED:
        return None
    if path.startswith("/v1/redemptions"):
        return TENANTS["funder"]
    if path.startswith("/v1/subject-access"):
        return TENANTS["operator"]
    return TENANTS["platform"]


# ------------------------------------------------------------------ signing


def canonical(method: str, path_and_query: str, ts: int, nonce: str, body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()
    return f"{method}\n{path_and_query}\n{ts}\n{nonce}\n{digest}"


def sign(secret: str, text: str) -> str:
    mac = hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")


VECTORS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "..", "crates", "dzl-types", "tests", "vectors", "signing-vectors.json",
)


def _self_test() -> None:
    """The signing vectors of the contract (docs/api.md) through this file's signer."""
    with open(VECTORS, encoding="utf-8") as f:
        vectors = json.load(f)["vectors"]
    assert vectors, f"no signing vectors in {VECTORS}"
    for v in vectors:
        text = canonical(
            v["method"], v["path_and_query"], v["timestamp"], v["nonce"], v["body_utf8"].encode("utf-8")
        )
        assert text == v["canonical"], v["canonical"]
        assert sign(v["secret"], text) == v["signature"], v["canonical"]


_self_test()


@schemathesis.auth(refresh_interval=None)
class DzlAuth:
    """Marks a case with the key id of the tenant its route needs."""

    def get(self, case, context):
        return tenant_for(context.operation.path)

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["X-DZL-Key-Id"] = data["key_id"]
        case.headers["X-DZL-Timestamp"] = "0"
        case.headers["X-DZL-Nonce"] = "0" * 16
        case.headers["X-DZL-Signature"] = PLACEHOLDER


def _prepared(case) -> requests.PreparedRequest:
    kw = case.as_transport_kwargs(base_url=BASE_URL)
    req = requests.Request(
        method=kw["method"],
        url=kw["url"],
        headers=kw.get("headers"),
        params=kw.get("params"),
        cookies=kw.get("cookies"),
        json=kw.get("json"),
        data=kw.get("data"),
        files=kw.get("files"),
    )
    return requests.Session().prepare_request(req)


SIGNED_BY_US: set[str] = set()


@schemathesis.hook
def before_call(context, case, kwargs):
    if context.operation is not None and context.operation.path == "/v1/deposits":
        _maybe_repair_deposit(case)
    headers = case.headers or {}
    key_id = headers.get("X-DZL-Key-Id")
    sig = headers.get("X-DZL-Signature")
    if key_id not in OURS or (sig != PLACEHOLDER and sig not in SIGNED_BY_US):
        return
    prepared = _prepared(case)
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    ts = int(dt.datetime.now(dt.timezone.utc).timestamp())
    nonce = secrets.token_urlsafe(18)
    signature = sign(OURS[key_id], canonical(prepared.method, prepared.path_url, ts, nonce, body))
    SIGNED_BY_US.add(signature)
    headers["X-DZL-Timestamp"] = str(ts)
    headers["X-DZL-Nonce"] = nonce
    headers["X-DZL-Signature"] = signature
    case.headers = headers


# --------------------------------------------------------------------- data

GB11643_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
GB11643_CHECK = "10X98765432"
PROVINCES = ["11", "12", "13", "31", "32", "33", "37", "44", "51", "61", "65"]


def resident_id(province: str, area: str, birth: dt.date, seq: int) -> str:
    body = f"{province}{area}{birth:%Y%m%d}{seq:03d}"
    total = sum(int(c) * w for c, w in zip(body, GB11643_WEIGHTS))
    return body + GB11643_CHECK[total % 11]


assert resident_id("11", "0105", dt.date(1949, 12, 31), 2) == "11010519491231002X"

schemathesis.openapi.format(
    "gb11643",
    st.builds(
        resident_id,
        st.sampled_from(PROVINCES),
        st.from_regex(r"\A[0-9]{4}\Z"),
        st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2008, 1, 1)),
        st.integers(min_value=0, max_value=999),
    ),
)


def _is_negative(case) -> bool:
    meta = getattr(case, "meta", None)
    try:
        return bool(meta is not None and meta.generation.mode.is_negative)
    except AttributeError:
        return False


def _maybe_repair_deposit(case) -> None:
    body = case.body
    if _is_negative(case) or not isinstance(body, dict) or random.random() >= REPAIR:
        return
    if not isinstance(body.get("applicant"), dict) or not isinstance(body.get("consent"), dict):
        return
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    consent = body["consent"]
    consent["granted_at"] = (now - dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    consent["expires_at"] = (now + dt.timedelta(days=365)).isoformat().replace("+00:00", "Z")
    groups = ["applicant"] + [g for g in ("device", "risk") if isinstance(body.get(g), dict)]
    consent["scopes"] = groups
    grants = body.get("grants")
    if not isinstance(grants, list) or not grants:
        grants = [{"scopes": ["applicant"]}]
    fixed = []
    for g in grants[:4]:
        if not isinstance(g, dict):
            continue
        scopes = [s for s in g.get("scopes", []) if s in groups] or ["applicant"]
        g = dict(g)
        g["funder_id"] = TENANTS["funder"]["tenant_id"]
        g["scopes"] = sorted(set(scopes), key=groups.index)
        if "ttl_seconds" in g and not (isinstance(g["ttl_seconds"], int) and 1 <= g["ttl_seconds"] <= 2592000):
            g["ttl_seconds"] = 3600
        fixed.append(g)
    body["grants"] = fixed or [{"funder_id": TENANTS["funder"]["tenant_id"], "scopes": ["applicant"]}]
    body["external_ref"] = "ST-" + secrets.token_hex(8)
    # The canary identity (valid check digit): scripts/schemathesis searches
    # the server's log and data directory for it afterwards.
    applicant = body["applicant"]
    applicant.update({"name": CANARY["name"], "id_type": "resident_id",
                      "id_number": CANARY["id_number"], "phone": CANARY["phone"]})
    case.body = body
