"""Examiners' decisions: the schema of the append-only audit log and the verdicts (see `CaseStore.confirm`).

Kept apart from `casestore` so that `check` reads them without importing the store module.
"""

from __future__ import annotations

from .db import Dialects

__all__ = ["DECISION_TRIGGERS", "VERDICTS", "REFUSE_FUNCTION"]

#: PostgreSQL's trigger functions (SQLite says both inline or keeps the count itself):
#: ``ballistix_refuse`` refuses a change with the trigger's message; ``ballistix_issued`` keeps the
#: highest id an append-only log has handed out in ``meta`` (key ``issued:<table>``), in the
#: inserting transaction, as SQLite's ``sqlite_sequence`` does: a deleted latest row shows.
REFUSE_FUNCTION = Dialects(
    "",
    """CREATE OR REPLACE FUNCTION ballistix_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation'; END $$;
    CREATE OR REPLACE FUNCTION ballistix_issued() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO meta VALUES ('issued:' || TG_TABLE_NAME, to_jsonb(NEW) ->> TG_ARGV[0])
        ON CONFLICT (key) DO UPDATE SET value = GREATEST(meta.value::bigint, excluded.value::bigint)::text;
        RETURN NULL;
    END $$""",
)


def _issued(table: str, column: str) -> Dialects:
    """PostgreSQL: count the ids ``table`` hands out (see `REFUSE_FUNCTION`); SQLite keeps them itself."""
    return Dialects(
        "",
        f"CREATE TRIGGER {table}_issued AFTER INSERT ON {table} FOR EACH ROW "
        f"EXECUTE FUNCTION ballistix_issued('{column}')",
    )


def _refuse(name: str, table: str, event: str, message: str, *, postgresql_only: bool = False) -> Dialects:
    """A trigger that refuses every ``event`` (UPDATE, DELETE; TRUNCATE, which skips PostgreSQL's row
    triggers and which SQLite does not have) on ``table`` with ``message``."""
    return Dialects(
        ""
        if postgresql_only
        else f"CREATE TRIGGER {name} BEFORE {event} ON {table}\n        BEGIN SELECT RAISE(ABORT, '{message}'); END",
        f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH {'STATEMENT' if event == 'TRUNCATE' else 'ROW'} "
        f"EXECUTE FUNCTION ballistix_refuse('{message}')",
    )


#: Examiners' decisions on recorded comparisons (schema 4): an append-only audit log. A decision is
#: never changed or deleted (the triggers refuse it in SQLite itself), only superseded by a later one
#: of the same pair, which names the one it replaces (``supersedes``: the pair's latest decision, or
#: NULL for its first). The latest decision of a pair is its current one; `CaseStore.confirm` writes
#: its effect on the comparison (``comparisons.confirmed``) in the same transaction.
_DECISIONS = [
    """CREATE TABLE decisions (
        decision_id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: a gap is a deleted decision
        a INTEGER NOT NULL REFERENCES exhibits(rowid), b INTEGER NOT NULL REFERENCES exhibits(rowid),
        verdict TEXT NOT NULL CHECK (verdict IN ('identification', 'elimination', 'inconclusive')),
        examiner TEXT NOT NULL CHECK (length(trim(examiner)) > 0),
        reason TEXT NOT NULL CHECK (length(trim(reason)) > 0),
        created_utc TEXT NOT NULL, created_by TEXT NOT NULL, ballistix_version TEXT NOT NULL,
        supersedes INTEGER REFERENCES decisions(decision_id),   -- the pair's decision this one replaces
        CHECK (a < b))""",
    """CREATE INDEX decisions_pair ON decisions (a, b, decision_id)""",
    REFUSE_FUNCTION,
    _refuse(
        "decisions_no_update",
        "decisions",
        "UPDATE",
        "decisions are append-only: a decision is never changed, only superseded",
    ),
    _refuse(
        "decisions_no_delete",
        "decisions",
        "DELETE",
        "decisions are append-only: a decision is never deleted, only superseded",
    ),
    Dialects(
        """CREATE TRIGGER decisions_chain BEFORE INSERT ON decisions
        WHEN NEW.supersedes IS NOT (SELECT max(decision_id) FROM decisions WHERE a = NEW.a AND b = NEW.b)
        BEGIN SELECT RAISE(ABORT, 'a decision supersedes the latest decision of its pair'); END""",
        """CREATE OR REPLACE FUNCTION ballistix_decisions_chain() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.supersedes IS DISTINCT FROM (SELECT max(decision_id) FROM decisions WHERE a = NEW.a AND b = NEW.b)
            THEN RAISE EXCEPTION 'a decision supersedes the latest decision of its pair'
                USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER decisions_chain BEFORE INSERT ON decisions FOR EACH ROW
        EXECUTE FUNCTION ballistix_decisions_chain()""",
    ),
    _issued("decisions", "decision_id"),
    _refuse(
        "decisions_no_truncate",
        "decisions",
        "TRUNCATE",
        "decisions are append-only: never truncated",
        postgresql_only=True,
    ),
]
#: The triggers that keep `_DECISIONS` append-only (`check` verifies they are there).
DECISION_TRIGGERS = ("decisions_no_update", "decisions_no_delete", "decisions_chain")
#: An examiner's verdicts, and what each makes of its comparison's ``confirmed`` (read by the graph's
#: link rule): an identification is a link, an elimination is not, an inconclusive one is neither
#: (``NULL``; the graph keeps it for review, never a link by its LR: see `DecisionRule`).
VERDICTS = {"identification": 1, "elimination": 0, "inconclusive": None}
