"""The SQLite results store: recording, listing, comparing, forward migration, refusing newer/corrupt files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edgec.deploy.results import MIGRATIONS, SCHEMA_VERSION, ResultsStore
from edgec.errors import DeviceError, ResultsError

pytestmark = pytest.mark.unit
DATA = Path(__file__).parent / "data"


def result(mean: float, bundle: str = "ab" * 32) -> dict:
    return {"schema_version": 1, "bundle_id": bundle, "agent_version": "0123456789abcdef",
            "latency_ms": {"mean": mean, "p50": mean * 0.9, "p90": mean * 1.2}, "conditions": {"threads": 2}}


def test_record_list_show_compare(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        a = store.record(bundle_id="ab" * 32, device="pi1", profile="rpi4", result=result(2.0), farm_run="f1")
        b = store.record(bundle_id="ab" * 32, device="pi2", profile="rpi4", result=result(3.0), farm_run="f1")
        c = store.record(bundle_id="cd" * 32, device="pi3", error=DeviceError("pi3: connection lost"))
        assert [r["id"] for r in store.list()] == [c, b, a]
        assert [r["device"] for r in store.list(bundle="abab")] == ["pi2", "pi1"]
        assert [r["device"] for r in store.list(farm_run="f1", device="pi1")] == ["pi1"]
        shown = store.get(a)
        assert shown["result"]["latency_ms"]["mean"] == 2.0 and shown["conditions"] == {"threads": 2}
        assert shown["agent_version"] == "0123456789abcdef"
        failed = store.get(c)
        assert (failed["status"], failed["error_type"], failed["error_message"]) == (
            "error", "DeviceError", "pi3: connection lost")
        doc = store.compare(a, b)
        assert doc["same_bundle"] and doc["metrics"][0] == {"metric": "latency_ms_mean", "base": 2.0, "other": 3.0,
                                                             "ratio": 1.5}
        with pytest.raises(ResultsError, match="no run with id 99"):
            store.get(99)


def test_an_old_database_migrates_forward_keeping_its_rows(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)  # what edgec with schema 1 wrote: frozen SQL, not today's MIGRATIONS[0]
    db.executescript((DATA / "results-v1.sql").read_text())
    db.close()
    with ResultsStore(path) as store:
        rows = store.list()
        assert [(r["device"], r["status"], r["latency_ms_mean"], r["farm_run"]) for r in rows] == [
            ("old-pi2", "error", None, None), ("old-pi", "ok", 5.0, None)]
        old = store.get(rows[1]["id"])
        assert old["result"]["latency_ms"]["p90"] == 6.0 and old["address"] == "10.0.0.7"
        assert store.get(rows[0]["id"])["error_message"] == "old-pi2: connection refused"
        new = store.record(bundle_id="ef" * 32, device="new-pi", result=result(1.0), farm_run="f2")
        assert store.get(new)["farm_run"] == "f2" and store.get(new)["agent_version"] == "0123456789abcdef"
        assert store.compare(rows[1]["id"], new)["same_bundle"]
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION == 3


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ResultsError, match=r"new.db: results schema 4 was written by a newer edgec"):
        ResultsStore(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ResultsError, match=r"junk.db: not a readable edgec results database"):
        ResultsStore(path)


def test_record_needs_exactly_one_outcome(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store, pytest.raises(ValueError):
        store.record(bundle_id="x", device="d")


def test_a_schema_2_database_gains_live_samples_and_rollouts(tmp_path):
    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)  # what edgec with schema 2 wrote: the frozen v1 tables, then the v2 step
    db.executescript((Path(__file__).parent / "data" / "results-v1.sql").read_text() + MIGRATIONS[1]
                     + "PRAGMA user_version = 2;")
    db.close()
    with ResultsStore(path) as store:
        store.record(bundle_id="ab", device="pi", result={"latency_ms": {"p50": 1.0, "mean": 1.1, "p99": 2.5}})
        store.record(bundle_id="ab", device="other", result={"latency_ms": {"p50": 9.0, "mean": 9.1, "p99": 9.5}})
        assert store.baseline("ab", "pi")["p99_ms"] == 2.5
        assert store.baseline("ab", "nowhere")["device"] == "other"  # never benchmarked there: the newest anywhere
        assert store.baseline("cd", "pi") is None
        store.record_live({"at": 10.0, "device": "pi", "bundle_id": "ab", "p99_ms": 3.0, "drift": ["latency"]})
        store.record_rollout(device="pi", action="deploy", bundle_id="ab", previous=None, status="rolled_back",
                             reason="reference")
        [sample] = store.live_samples("pi")
        assert (sample["p99_ms"], sample["drift"]) == (3.0, "latency")
        assert [(r["action"], r["status"]) for r in store.rollouts("pi")] == [("deploy", "rolled_back")]
    with pytest.raises(sqlite3.IntegrityError), ResultsStore(path) as store:  # the CHECK constraints hold
        store.record_rollout(device="pi", action="explode", bundle_id="ab", previous=None, status="ok")
