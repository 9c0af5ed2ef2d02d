"""API keys, roles and the audit trail.

A key is a 256-bit random token shown once; the database keeps only its SHA-256. Roles are
ordered: viewer < operator < admin.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gis_ioc.errors import Forbidden, InvalidInput, NotFound, Unauthorized

ROLES = ("viewer", "operator", "admin")
KEY_PREFIX = "gioc_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name and role."""

    name: str
    role: str

    def can(self, role: str) -> bool:
        """Whether this principal has at least ``role``."""
        return ROLES.index(self.role) >= ROLES.index(role)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(engine: Engine, name: str, role: str) -> str:
    """Create a key and return it (the only time it is shown)."""
    if role not in ROLES:
        raise InvalidInput(f"--role: {role!r} is not one of {', '.join(ROLES)}", param="role")
    if not name.strip():
        raise InvalidInput("--name: a key needs a name", param="name")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM api_keys WHERE name = :n"), {"n": name}).first()
        if exists:
            raise InvalidInput(f"--name: a key named {name!r} exists already", param="name")
        conn.execute(
            sa.text("INSERT INTO api_keys (name, role, key_hash, key_prefix) VALUES (:n, :r, :h, :p)"),
            {"n": name, "r": role, "h": _hash(key), "p": key[: len(KEY_PREFIX) + 4]},
        )
    return key


def list_keys(engine: Engine) -> list[dict[str, Any]]:
    """Every key: name, role, prefix, dates (never the key)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT name, role, key_prefix, created_at, last_used_at, revoked_at FROM api_keys ORDER BY name"))
        return [dict(r._mapping) for r in rows]


def revoke_key(engine: Engine, name: str) -> None:
    """Revoke a key by name."""
    with engine.begin() as conn:
        done = conn.execute(sa.text(
            "UPDATE api_keys SET revoked_at = now() WHERE name = :n AND revoked_at IS NULL"), {"n": name})
    if done.rowcount == 0:
        raise NotFound(f"no active key named {name!r}", param="name")


LAST_USED_EVERY_S = 60  # last_used_at is kept to the minute: a read with a key writes nothing most of the time


def authenticate(conn: Connection, key: str) -> Principal:
    """The principal of a key; an unknown or revoked key is a 401.

    A read, and a write of ``last_used_at`` at most once a minute per key.
    """
    row = conn.execute(
        sa.text("SELECT id, name, role, last_used_at IS NULL OR last_used_at < now() - make_interval(secs => :every) "
                "AS stale FROM api_keys WHERE key_hash = :h AND revoked_at IS NULL"),
        {"h": _hash(key), "every": LAST_USED_EVERY_S},
    ).first()
    if row is None:
        raise Unauthorized("the API key is unknown or revoked")
    if row.stale:
        conn.execute(sa.text("UPDATE api_keys SET last_used_at = now() WHERE id = :i"), {"i": row.id})
    return Principal(row.name, row.role)


def require(principal: Principal | None, role: str, action: str) -> Principal:
    """The principal, if it may ``action``: 401 without a key, 403 with too weak a role."""
    if principal is None:
        raise Unauthorized(f"{action} needs an API key with the role {role} (Authorization: Bearer KEY)")
    if not principal.can(role):
        raise Forbidden(f"{action} needs the role {role}; the key {principal.name!r} is {principal.role}")
    return principal


def audit(conn: Connection, principal: Principal | None, layer_id: str, feature_id: Any, operation: str,
          before: Any = None, after: Any = None) -> None:
    """Record a write (inside the write's own transaction)."""
    conn.execute(
        sa.text("INSERT INTO audit_log (key_name, role, layer_id, feature_id, operation, before, after) "
                "VALUES (:k, :r, :l, :f, :o, CAST(:b AS jsonb), CAST(:a AS jsonb))"),
        {"k": principal.name if principal else None, "r": principal.role if principal else None, "l": layer_id,
         "f": None if feature_id is None else str(feature_id), "o": operation,
         "b": None if before is None else json.dumps(before), "a": None if after is None else json.dumps(after)},
    )
