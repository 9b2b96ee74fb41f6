"""Helpers for the tests of case stores on either backend: SQLite (``store.sqlite`` in the folder)
or PostgreSQL (the database the folder's ``store.database`` names; see conftest's ``store_backend``)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ballistix.store.db import Database


def connect(folder) -> Database:
    """A connection of its own to the database of the store at ``folder``."""
    folder = Path(folder)
    pointer = folder / "store.database"
    if pointer.exists():
        return Database.postgresql(json.loads(pointer.read_text())["url"])
    return Database.sqlite(sqlite3.connect(folder / "store.sqlite", isolation_level=None), folder / "store.sqlite")


def sql(folder, query, *args):
    """Rows of one statement (``?`` placeholders) on the store's database, committed."""
    db = connect(folder)
    try:
        cur = db.execute(query, args)
        return cur.fetchall() if cur.description else []
    finally:
        db.close()
