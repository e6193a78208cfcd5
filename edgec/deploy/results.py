"""The results store: every benchmark outcome (result or error) in SQLite, so runs compare over time.

Default file ``$EDGEC_HOME/results.db`` (``~/.edgec/results.db``). The schema version is SQLite's
``PRAGMA user_version``; ``MIGRATIONS[k]`` takes a database from version k to k+1, and opening a database
applies the missing ones in one transaction, so an old file migrates forward and keeps its rows. A file written
by a newer edgec (a higher version) is refused rather than misread.

Each row holds the bundle hash, the device (name and address), its profile, the outcome, a few latency figures
pulled out for listing and comparing, and the agent's whole BenchResult document as JSON. A document comes
from a device: one that fails ``edgec.device_agent.schema.result_problem`` (a string where a number belongs, no
latency figures) is stored as an error of that run (``InvalidResult``), not as a result. ``delete`` removes a run. Schema 3 adds
``live_samples`` (the inference service's metrics over time, ``edgec farm status``) and ``rollouts`` (every
deploy and rollback per device, ``edgec deploy``/``edgec rollback``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

from edgec.device_agent.schema import result_problem
from edgec.errors import ResultsError
from edgec.settings import edgec_home

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "ResultsStore", "default_results_path", "latency_figures"]

MIGRATIONS = [
    # 0 -> 1: one row per device outcome.
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        bundle_id TEXT NOT NULL,
        device TEXT NOT NULL,
        address TEXT,
        profile TEXT,
        status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
        error_type TEXT,
        error_message TEXT,
        latency_ms_mean REAL,
        latency_ms_p50 REAL,
        latency_ms_p90 REAL,
        result_json TEXT
    );
    CREATE INDEX runs_bundle ON runs (bundle_id);
    CREATE INDEX runs_device ON runs (device);
    """,
    # 1 -> 2: group the devices of one farm bench; keep conditions and agent version queryable.
    """
    ALTER TABLE runs ADD COLUMN farm_run TEXT;
    ALTER TABLE runs ADD COLUMN agent_version TEXT;
    ALTER TABLE runs ADD COLUMN conditions_json TEXT;
    CREATE INDEX runs_farm_run ON runs (farm_run);
    """,
    # 2 -> 3: the live service: samples of its metrics over time, and every deploy/rollback on each device.
    """
    CREATE TABLE live_samples (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        at REAL NOT NULL,
        device TEXT NOT NULL,
        bundle_id TEXT,
        started_at REAL,
        uptime_s REAL,
        requests INTEGER,
        errors INTEGER,
        rate_rps REAL,
        p50_ms REAL,
        p99_ms REAL,
        baseline_p99_ms REAL,
        temperature_c REAL,
        power_w REAL,
        drift TEXT,
        sample_json TEXT
    );
    CREATE INDEX live_device ON live_samples (device, at);
    CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        at REAL NOT NULL,
        rollout TEXT,
        device TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('deploy', 'rollback')),
        bundle_id TEXT,
        previous_bundle_id TEXT,
        status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'rolled_back')),
        reason TEXT
    );
    CREATE INDEX rollouts_device ON rollouts (device, at);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
_COMPARED = ("latency_ms_mean", "latency_ms_p50", "latency_ms_p90")


def default_results_path() -> Path:
    return edgec_home() / "results.db"


def latency_figures(result: dict) -> dict:
    """mean/p50/p90 latency in ms from a BenchResult document's ``latency_ms`` (None where it has none)."""
    stats = result.get("latency_ms")
    stats = stats if isinstance(stats, dict) else {}
    pick = {}
    for name in ("mean", "p50", "p90"):
        value = stats.get(name)
        pick[f"latency_ms_{name}"] = float(value) if isinstance(value, (int, float)) else None
    return pick


class ResultsStore:
    """A results database; thread-safe, each ``record`` committed at once."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_results_path()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise ResultsError(f"{self.path}: not a readable edgec results database ({exc}); "
                               "pass another --results PATH or move the file away") from None
        except OSError as exc:
            raise ResultsError(f"{self.path}: cannot open the results database ({exc})") from None

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ResultsError(f"{self.path}: results schema {version} was written by a newer edgec (this one "
                               f"reads up to {SCHEMA_VERSION}); upgrade edgec or pass another --results PATH")
        if version == SCHEMA_VERSION:
            return
        # executescript commits first; the explicit BEGIN makes all pending steps one transaction.
        script = "BEGIN;\n" + "\n".join(MIGRATIONS[version:]) + f"\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
        try:
            self._db.executescript(script)
        except sqlite3.DatabaseError:
            self._db.rollback()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def record(self, *, bundle_id: str, device: str, address: str | None = None, profile: str | None = None,
               result: dict | None = None, error: BaseException | dict | None = None,
               farm_run: str | None = None) -> int:
        """Store one device's outcome now; returns the row id. Exactly one of ``result``/``error``."""
        if (result is None) == (error is None):
            raise ValueError("record() needs exactly one of result= or error=")
        row = {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "bundle_id": bundle_id,
               "device": device, "address": address, "profile": profile, "farm_run": farm_run}
        problem = result_problem(result) if result is not None else None
        if problem is not None:  # what the device sent is not a result: store the run as an error
            result, error = None, {"type": "InvalidResult", "message": f"the device's result is malformed: {problem}"}
        if result is not None:
            row.update(status="ok", result_json=json.dumps(result, sort_keys=True),
                       agent_version=result.get("agent_version"),
                       conditions_json=json.dumps(result.get("conditions")) if "conditions" in result else None,
                       **latency_figures(result))
        else:
            kind, message = (error["type"], error["message"]) if isinstance(error, dict) else (
                type(error).__name__, str(error))
            row.update(status="error", error_type=kind, error_message=message)
        return self._insert("runs", row)

    def _insert(self, table: str, row: dict) -> int:
        row = {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **row}
        with self._lock:
            cursor = self._db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                                      tuple(row.values()))
            self._db.commit()
        return cursor.lastrowid

    def record_live(self, sample: dict) -> int:
        """Store one live sample of a device's service (``edgec.deploy.live.device_sample``)."""
        columns = ("at", "device", "bundle_id", "started_at", "uptime_s", "requests", "errors", "rate_rps", "p50_ms",
                   "p99_ms", "baseline_p99_ms", "temperature_c", "power_w")
        row = {c: sample.get(c) for c in columns}
        row.update(drift=",".join(sample.get("drift") or []) or None, sample_json=json.dumps(sample, sort_keys=True))
        return self._insert("live_samples", row)

    def record_rollout(self, *, device: str, action: str, bundle_id: str | None, previous: str | None, status: str,
                       reason: str | None = None, rollout: str | None = None, at: float | None = None) -> int:
        """Store one deploy or rollback on one device (``status`` ok, failed or rolled_back)."""
        import time

        return self._insert("rollouts", {"at": at if at is not None else time.time(), "rollout": rollout,
                                         "device": device, "action": action, "bundle_id": bundle_id,
                                         "previous_bundle_id": previous, "status": status, "reason": reason})

    def live_samples(self, device: str | None = None, since: float | None = None, limit: int = 5000) -> list[dict]:
        """Live samples, oldest first."""
        where, args = [], []
        if device:
            where.append("device = ?")
            args.append(device)
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        sql = ("SELECT * FROM (SELECT * FROM live_samples" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY id DESC LIMIT ?) ORDER BY id")
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, (*args, limit))]

    def rollouts(self, device: str | None = None, limit: int = 500) -> list[dict]:
        """Deploys and rollbacks, oldest first."""
        sql = ("SELECT * FROM (SELECT * FROM rollouts" + (" WHERE device = ?" if device else "")
               + " ORDER BY id DESC LIMIT ?) ORDER BY id")
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, ((device,) if device else ()) + (limit,))]

    def baseline(self, bundle_id: str, device: str | None = None) -> dict | None:
        """The newest successful benchmark of ``bundle_id`` on ``device`` (else on any device): its latency
        figures (p50, p99 in ms), the run id and the device it ran on; None when it was never benchmarked."""
        choices = [("bundle_id = ? AND device = ?", (bundle_id, device))] if device else []
        for where, args in [*choices, ("bundle_id = ?", (bundle_id,))]:
            with self._lock:
                row = self._db.execute(f"SELECT id, device, result_json FROM runs WHERE status = 'ok' AND {where} "
                                       "ORDER BY id DESC LIMIT 1", args).fetchone()
            if row is not None and row["result_json"]:
                stats = json.loads(row["result_json"]).get("latency_ms") or {}
                return {"run_id": row["id"], "device": row["device"], "p50_ms": stats.get("p50"),
                        "p99_ms": stats.get("p99")}
        return None

    def list(self, limit: int = 50, device: str | None = None, bundle: str | None = None,
             farm_run: str | None = None) -> list[dict]:
        """Newest first; ``bundle`` may be an id prefix."""
        where, args = [], []
        for column, value in (("device", device), ("farm_run", farm_run)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if bundle:
            where.append("bundle_id LIKE ?")
            args.append(bundle + "%")
        sql = ("SELECT id, created_at, bundle_id, device, address, profile, status, error_type, error_message, "
               "latency_ms_mean, latency_ms_p50, latency_ms_p90, farm_run FROM runs"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?")
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, (*args, limit))]

    def get(self, run_id: int) -> dict:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise ResultsError(f"{self.path}: no run with id {run_id}; see `edgec results list`")
        out = dict(row)
        for key in ("result_json", "conditions_json"):
            text = out.pop(key, None)
            if text:
                try:
                    out[key[: -len("_json")]] = json.loads(text)
                except (ValueError, RecursionError):
                    out[f"{key[: -len('_json')]}_problem"] = "stored JSON is unreadable"
        return out

    def delete(self, run_id: int) -> None:
        """Remove one stored run; ResultsError when there is none with that id."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            self._db.commit()
        if cursor.rowcount == 0:
            raise ResultsError(f"{self.path}: no run with id {run_id}; see `edgec results list`")

    def compare(self, base_id: int, other_id: int) -> dict:
        """Latency figures of two runs side by side, with other/base ratios."""
        base, other = self.get(base_id), self.get(other_id)
        rows = []
        for column in _COMPARED:
            a, b = base.get(column), other.get(column)
            rows.append({"metric": column, "base": a, "other": b, "ratio": (b / a) if a and b is not None else None})
        same = base["bundle_id"] == other["bundle_id"]
        return {"base": _summary(base), "other": _summary(other), "same_bundle": same, "metrics": rows}


def _summary(run: dict) -> dict:
    keys = ("id", "created_at", "bundle_id", "device", "profile", "status", "error_type", "error_message")
    return {k: run.get(k) for k in keys}
