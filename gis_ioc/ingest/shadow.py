"""A big load goes into a shadow table, which takes the layer's place at commit.

Growing a GiST index row by row costs about 13 µs a point (a million rows: 13 s, more than the COPY
itself); building it afterwards costs 2 s. A load used to drop the indexes inside its transaction to
build them at the end, which held an ACCESS EXCLUSIVE lock for the whole load and froze every reader.
Here the rows go into a new table of the same shape, its indexes, constraints, triggers and grants
are built there (statistics after the commit: ``store.analyze``), and the two tables trade places in
one short locked moment at the end
(the lock is asked for with a short ``lock_timeout`` and again until it is granted, so readers never
queue behind it for long). Readers see the old rows throughout, then the new ones. Writers wait for
the load (the old table is locked EXCLUSIVE, which readers pass).

A table takes part only when nothing else is tied to it by name or identity (no foreign key pointing
at it, no view or rule on it, no partitions, no inheritance, no row security, no publication) and the
loading role owns it.
Otherwise the load goes into the table itself (``None`` from ``Shadow.begin``).

A table partitioned by month (``month_partitioned``, migration 020: incidents) takes part too: its shadow
is partitioned the same way, with the old table's months (the rows an append keeps go straight to theirs),
rows of other months land in the shadow's default partition and are given months of their own before the
indexes are built (``gis_ioc_split_default``; nobody reads the shadow), empty months are dropped except the
current one and the two ahead, and at the swap the shadow's partitions and their indexes take the old names.
"""

from __future__ import annotations

import re
from typing import Any

from gis_ioc import db, partitions
from gis_ioc.catalog import Layer, quote_ident

SUFFIX = "__gis_ioc_load"
# tables whose rows the incident counts depend on (migration 018): a swapped-in load counts again
RECOUNT_AFTER_SWAP = ("public.incidents", "public.admin_units")


def _why_not(cur: Any, oid: int, by_month: bool = False) -> str | None:
    """Why the table cannot be swapped (None: it can)."""
    checks = {
        "it is partitioned or a partition": "SELECT relkind = 'p' OR relispartition FROM pg_class WHERE oid = %s",
        "a foreign key points at it": "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE confrelid = %s)",
        "a view or rule uses it": "SELECT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
                                  "WHERE d.refobjid = %s AND d.classid = 'pg_rewrite'::regclass)",
        "it inherits or is inherited": "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = %(o)s OR "
                                       "inhparent = %(o)s)",
        "it has row security": "SELECT relrowsecurity FROM pg_class WHERE oid = %s",
        "it is published": "SELECT EXISTS (SELECT 1 FROM pg_publication_rel WHERE prrelid = %s)",
        "the loading role does not own it": "SELECT NOT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class "
                                            "WHERE oid = %s",
    }
    if by_month:  # its partitions are its own, made again in the shadow
        checks["it is partitioned or a partition"] = "SELECT relispartition FROM pg_class WHERE oid = %s"
        checks["it inherits or is inherited"] = "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = %s)"
    for reason, sql in checks.items():
        cur.execute(sql, {"o": oid} if "%(o)s" in sql else (oid,))
        if cur.fetchone()[0]:
            return reason
    return None


class Shadow:
    """The shadow table of one load: created by ``begin``, swapped in by ``finish``."""

    def __init__(self, cur: Any, layer: Layer, oid: int) -> None:
        self.cur = cur
        self.layer = layer
        self.oid = oid
        self.schema = quote_ident(layer.schema_name)
        self.old = f"{self.schema}.{quote_ident(layer.table_name)}"
        self.name = (layer.table_name + SUFFIX)[:63]
        self.sequences: dict[str, str] = {}  # the layer's identity columns and their sequences
        self.replaced = 0  # rows of the old table a replace removes
        self.table = f"{self.schema}.{quote_ident(self.name)}"
        self.by_month: tuple[str, str] | None = None  # (column, time zone) of a table partitioned by month
        self.partition_names: dict[str, str] = {}  # the shadow's partitions made after the old table's: their names
        cur.execute("SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s", (oid,))
        self.old_text = str(cur.fetchone()[0])  # the table as pg_get_indexdef and pg_get_triggerdef write it

    @classmethod
    def begin(cls, cur: Any, layer: Layer, mode: str) -> Shadow | None:
        """Lock out writers, then make the shadow (a copy of the rows kept in ``append`` mode); None: not here."""
        if mode not in ("append", "replace"):
            return None
        cur.execute("SELECT to_regclass(%s)::oid", (layer.table,))
        oid = cur.fetchone()[0]
        by_month = partitions.month_partitioning(cur, layer.table) if oid is not None else None
        if oid is None or _why_not(cur, oid, by_month is not None) is not None:
            return None
        shadow = cls(cur, layer, oid)
        shadow.by_month = by_month
        cur.execute(f"LOCK TABLE {shadow.old} IN EXCLUSIVE MODE")  # writers wait; readers go on
        cur.execute(f"DROP TABLE IF EXISTS {shadow.table}")
        if by_month is None:
            cur.execute(f"CREATE TABLE {shadow.table} (LIKE {shadow.old} INCLUDING ALL EXCLUDING INDEXES)")
        else:
            cur.execute(f"CREATE TABLE {shadow.table} (LIKE {shadow.old} INCLUDING ALL EXCLUDING INDEXES) "
                        f"PARTITION BY RANGE ({quote_ident(by_month[0])})")
            shadow._same_partitions()
        shadow.sequences = shadow._identities(layer.table)
        for column, sequence in shadow.sequences.items():  # ids go on from where the layer's stopped
            cur.execute("SELECT last_value + CASE WHEN is_called THEN 1 ELSE 0 END FROM " + sequence)
            cur.execute(f"ALTER TABLE {shadow.table} ALTER COLUMN {quote_ident(column)} RESTART WITH %s",
                        (cur.fetchone()[0],))
        if mode == "replace":  # what the load removes, for its report (the table is locked against writers)
            cur.execute(f"SELECT count(*) FROM {shadow.old}")
            shadow.replaced = int(cur.fetchone()[0])
        if mode == "append":
            cur.execute("SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
                        "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped AND attgenerated = ''", (oid,))
            columns = cur.fetchone()[0]  # every stored column; generated ones are computed again
            cur.execute(f"INSERT INTO {shadow.table} ({columns}) OVERRIDING SYSTEM VALUE "
                        f"SELECT {columns} FROM {shadow.old}")
        return shadow

    def _same_partitions(self) -> None:
        """The old table's partitions, empty, in the shadow (named after the shadow, remembered for the swap)."""
        self.cur.execute("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                         "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s ORDER BY 1", (self.oid,))
        base = self.layer.table_name
        for number, (name, bound) in enumerate(self.cur.fetchall()):
            part = (self.name + name[len(base):]) if name.startswith(base) else f"{self.name}_{number}"
            if len(part) > 63:
                part = f"{self.name[:50]}_{number}"
            self.cur.execute(f"CREATE TABLE {self.schema}.{quote_ident(part)} PARTITION OF {self.table} {bound}")
            self.partition_names[part] = name

    def _months_settled(self) -> None:
        """Rows of months the old table had no partition for get theirs; empty months go, but for the next ones."""
        assert self.by_month is not None
        column, zone = self.by_month
        cur = self.cur
        cur.execute("SELECT gis_ioc_split_default(%s::regclass, %s, %s)", (self.table, column, zone))
        cur.execute("SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = %s::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'",
                    (self.table,))
        for (part,) in cur.fetchall():
            cur.execute(f"SELECT EXISTS (SELECT 1 FROM {part})")
            if not cur.fetchone()[0]:
                cur.execute(f"DROP TABLE {part}")
        cur.execute("SELECT gis_ioc_month_partition(%s::regclass, m, %s) FROM generate_series("
                    "date_trunc('month', now() AT TIME ZONE %s), date_trunc('month', now() AT TIME ZONE %s) "
                    f"+ interval '{partitions.MONTHS_AHEAD} months', interval '1 month') m",
                    (self.table, zone, zone, zone))

    def _partitions_renamed(self) -> list[str]:
        """Statements giving the shadow's partitions and their indexes the names the old table's had."""
        cur, base = self.cur, self.layer.table_name
        cur.execute("SELECT c.relname, c.oid FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = %s::regclass ORDER BY 1", (self.table,))
        statements = []
        for name, oid in cur.fetchall():
            target = self.partition_names.get(name) or (base + name[len(self.name):] if name.startswith(self.name)
                                                         else None)
            if target is None or target == name:
                continue
            statements.append(f"ALTER TABLE {self.schema}.{quote_ident(name)} RENAME TO {quote_ident(target)}")
            cur.execute("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "WHERE i.indrelid = %s", (oid,))
            for (index,) in cur.fetchall():
                if index.startswith(name):
                    statements.append(f"ALTER INDEX {self.schema}.{quote_ident(index)} RENAME TO "
                                      f"{quote_ident((target + index[len(name):])[:63])}")
        return statements

    def _identities(self, table: str) -> dict[str, str]:
        """The identity columns of ``table`` (``schema.name``) and their sequences."""
        self.cur.execute("SELECT a.attname, pg_get_serial_sequence(%s, a.attname) FROM pg_attribute a "
                         "WHERE a.attrelid = to_regclass(%s) AND a.attidentity <> '' AND NOT a.attisdropped",
                         (table, table))
        return {str(r[0]): str(r[1]) for r in self.cur.fetchall() if r[1]}

    def finish(self) -> None:
        """Build what the table had, then take its place (a brief exclusive lock, asked for again until granted)."""
        cur, old_name = self.cur, quote_ident(self.layer.table_name)
        renames: list[str] = []
        if self.by_month is not None:
            self._months_settled()
        # indexes, the ones behind primary keys and unique constraints too, under temporary names
        cur.execute("SELECT c.relname, pg_get_indexdef(i.indexrelid), con.conname, con.contype "
                    "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid "
                    "WHERE i.indrelid = %s ORDER BY c.relname", (self.oid,))
        for index, definition, constraint, kind in cur.fetchall():
            temporary = quote_ident((index + SUFFIX)[:63])
            if constraint is not None and self.by_month is not None:  # no USING INDEX on a partitioned table
                cur.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s "
                            "AND conname = %s", (self.oid, constraint))
                cur.execute(f"ALTER TABLE {self.table} ADD CONSTRAINT {quote_ident(constraint + SUFFIX)} "
                            f"{cur.fetchone()[0]}")
                renames.append(f"ALTER TABLE {self.old} RENAME CONSTRAINT {quote_ident(constraint + SUFFIX)} "
                               f"TO {quote_ident(constraint)}")
                continue
            definition = re.sub(r" INDEX \S+ ON ", f" INDEX {temporary} ON ", definition, count=1)
            cur.execute(_on_shadow(definition.replace(" ON ONLY ", " ON ", 1), self.old_text, self.table))
            if constraint is not None:
                clause = "PRIMARY KEY" if kind == "p" else "UNIQUE"
                cur.execute(f"ALTER TABLE {self.table} ADD CONSTRAINT {quote_ident(constraint + SUFFIX)} "
                            f"{clause} USING INDEX {temporary}")
                renames.append(f"ALTER TABLE {self.old} RENAME CONSTRAINT {quote_ident(constraint + SUFFIX)} "
                               f"TO {quote_ident(constraint)}")
            else:
                renames.append(f"ALTER INDEX {self.schema}.{temporary} RENAME TO {quote_ident(index)}")
        # foreign keys out of the table, and exclusion constraints, as they were
        cur.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s "
                    "AND contype IN ('f', 'x')", (self.oid,))
        for name, definition in cur.fetchall():
            cur.execute(f"ALTER TABLE {self.table} ADD CONSTRAINT {quote_ident(name + SUFFIX)} {definition}")
            renames.append(f"ALTER TABLE {self.old} RENAME CONSTRAINT {quote_ident(name + SUFFIX)} "
                           f"TO {quote_ident(name)}")
        # triggers (after the rows are in: none of them ran on the COPY), owner, grants, comment
        cur.execute("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal",
                    (self.oid,))
        for (definition,) in cur.fetchall():
            cur.execute(_on_shadow(definition, self.old_text, self.table))
        cur.execute("SELECT pg_get_userbyid(relowner), obj_description(oid, 'pg_class') FROM pg_class "
                    "WHERE oid = %s", (self.oid,))
        owner, comment = cur.fetchone()
        cur.execute(f"ALTER TABLE {self.table} OWNER TO {quote_ident(owner)}")
        if comment is not None:
            cur.execute(f"COMMENT ON TABLE {self.table} IS %s", (comment,))
        cur.execute("SELECT pg_get_userbyid(a.grantee), a.privilege_type, a.is_grantable FROM pg_class c, "
                    "aclexplode(c.relacl) a WHERE c.oid = %s AND a.grantee <> c.relowner", (self.oid,))
        for grantee, privilege, grantable in cur.fetchall():
            who = "PUBLIC" if grantee == "-" else quote_ident(grantee)
            cur.execute(f"GRANT {privilege} ON {self.table} TO {who}{' WITH GRANT OPTION' if grantable else ''}")
        new_sequences = self._identities(f"{self.layer.schema_name}.{self.name}")
        self._take_lock()
        cur.execute(f"DROP TABLE {self.old}")
        partitions = self._partitions_renamed() if self.by_month is not None else []
        cur.execute(f"ALTER TABLE {self.table} RENAME TO {old_name}")
        for statement in partitions + renames:
            cur.execute(statement)
        for column, sequence in new_sequences.items():  # the layer's sequence names, as before
            if column in self.sequences:
                cur.execute(f"ALTER SEQUENCE {sequence} RENAME TO "
                            f"{quote_ident(self.sequences[column].split('.')[-1].strip(chr(34)))}")
        if self.layer.table in RECOUNT_AFTER_SWAP:  # the rows came in without the counting triggers
            cur.execute("SELECT gis_ioc_recount_incidents(current_date) "
                        "WHERE to_regprocedure('gis_ioc_recount_incidents(date)') IS NOT NULL")

    def _take_lock(self) -> None:
        """ACCESS EXCLUSIVE on the old table, asked for briefly and again, so readers never queue long."""
        db.take_lock_briefly(self.cur, self.old, f"layer {self.layer.id!r}: a reader held the table for over "
                             f"{db.LOCK_GIVE_UP_S:g} s each time the load tried to finish; nothing was loaded, "
                             "try again")


def _on_shadow(definition: str, table: str, shadow: str) -> str:
    """An index or trigger definition of ``table`` made for ``shadow`` (its first `` ON table ``)."""
    marker = f" ON {table} "
    if marker not in definition:
        raise RuntimeError(f"cannot move {definition[:80]!r} to the shadow table")
    return definition.replace(marker, f" ON {shadow} ", 1)
