"""Helpers for the tests of case stores on either backend: SQLite (``store.sqlite`` in the folder)
or PostgreSQL (the database the folder's ``store.database`` names; see conftest's ``store_backend``)."""

from __future__ import annotations

import json
import shutil
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


def copy_store(src, dst, server=None) -> Path:
    """A copy of the store at ``src`` at ``dst``: its folder, and on PostgreSQL its database too
    (``CREATE DATABASE ... TEMPLATE``: a backup restored under another name), named in the copy's
    ``store.database``."""
    src, dst = Path(src), Path(dst)
    shutil.copytree(src, dst)
    pointer = dst / "store.database"
    if pointer.exists():
        rec = json.loads(pointer.read_text())
        rec["url"] = server.clone_database(rec["url"])
        pointer.write_text(json.dumps(rec))
    return dst
