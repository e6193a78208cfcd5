-- A results database as edgec with results schema 1 wrote it, frozen: the schema is MIGRATIONS[0] as committed
-- in f79eb7a (edgec/deploy/results.py), the rows what that version recorded. Never regenerate this file from
-- today's migrations: it is the old file a user still has.
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
INSERT INTO runs (created_at, bundle_id, device, address, profile, status, latency_ms_mean, latency_ms_p50,
                  latency_ms_p90, result_json)
VALUES ('2026-01-01T00:00:00+00:00', 'efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef', 'old-pi',
        '10.0.0.7', 'rpi4', 'ok', 5.0, 4.5, 6.0,
        '{"schema_version": 1, "latency_ms": {"mean": 5.0, "p50": 4.5, "p90": 6.0}}');
INSERT INTO runs (created_at, bundle_id, device, address, profile, status, error_type, error_message)
VALUES ('2026-01-01T00:00:05+00:00', 'efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef', 'old-pi2',
        '10.0.0.8', 'rpi4', 'error', 'DeviceError', 'old-pi2: connection refused');
PRAGMA user_version = 1;
