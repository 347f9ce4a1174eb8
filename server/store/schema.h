// The results database schema, one entry per version. Migration i (1-based)
// takes a database from user_version i-1 to i. Append; never edit a shipped
// migration. README.md ("Results database") documents the tables and views.
#ifndef MEGABATCH_SERVER_STORE_SCHEMA_H_
#define MEGABATCH_SERVER_STORE_SCHEMA_H_

namespace megabatch::store {

inline constexpr const char* kMigrations[] = {
    // Version 1.
    R"sql(
CREATE TABLE sweeps (
  id            INTEGER PRIMARY KEY,
  name          TEXT NOT NULL,
  state         TEXT NOT NULL,
  spec_json     TEXT NOT NULL,
  request_id    TEXT UNIQUE,
  priority      INTEGER NOT NULL DEFAULT 0,
  max_parallel  INTEGER NOT NULL DEFAULT 0,
  max_retries   INTEGER NOT NULL DEFAULT 0,
  created_at    REAL NOT NULL,
  finished_at   REAL
);
CREATE TABLE workers (
  id                 INTEGER PRIMARY KEY,
  name               TEXT NOT NULL,
  slots              INTEGER NOT NULL,
  state              TEXT NOT NULL,
  registered_at      REAL NOT NULL,
  last_heartbeat_at  REAL NOT NULL
);
CREATE TABLE trials (
  id             INTEGER PRIMARY KEY,
  sweep_id       INTEGER NOT NULL REFERENCES sweeps(id),
  trial_index    INTEGER NOT NULL,
  optimizer      TEXT NOT NULL,
  batch_size     INTEGER NOT NULL,
  lr             REAL NOT NULL,
  lr_multiplier  REAL NOT NULL,
  seed           INTEGER NOT NULL,
  state          TEXT NOT NULL,
  config_json    TEXT NOT NULL,
  worker_id      INTEGER REFERENCES workers(id),
  lease_id       INTEGER NOT NULL DEFAULT 0,
  attempts       INTEGER NOT NULL DEFAULT 0,
  error          TEXT,
  started_at     REAL,
  finished_at    REAL,
  UNIQUE (sweep_id, trial_index)
);
CREATE INDEX trials_by_state ON trials (state, sweep_id);
CREATE INDEX trials_by_worker ON trials (worker_id, state);
CREATE TABLE metrics (
  trial_id     INTEGER NOT NULL REFERENCES trials(id),
  name         TEXT NOT NULL,
  step         INTEGER NOT NULL,
  value        REAL,
  recorded_at  REAL NOT NULL,
  PRIMARY KEY (trial_id, name, step)
) WITHOUT ROWID;
CREATE TABLE events (
  id         INTEGER PRIMARY KEY,
  at         REAL NOT NULL,
  sweep_id   INTEGER,
  trial_id   INTEGER,
  worker_id  INTEGER,
  kind       TEXT NOT NULL,
  message    TEXT NOT NULL
);
CREATE INDEX events_by_trial ON events (trial_id);
CREATE VIEW trial_summary AS
SELECT
  t.id AS trial_id, t.sweep_id, t.trial_index, t.optimizer, t.batch_size,
  t.lr, t.lr_multiplier, t.seed, t.state, t.attempts,
  t.finished_at - t.started_at AS seconds,
  (SELECT MAX(step) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'train_loss') AS steps,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'train_loss'
     ORDER BY step DESC LIMIT 1) AS final_train_loss,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'test_loss'
     ORDER BY step DESC LIMIT 1) AS final_test_loss,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'test_accuracy'
     ORDER BY step DESC LIMIT 1) AS final_test_accuracy,
  (SELECT MAX(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'test_accuracy') AS best_test_accuracy,
  (SELECT MIN(step) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'target_reached_seconds') AS steps_to_target,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'target_reached_seconds' ORDER BY step LIMIT 1) AS seconds_to_target,
  t.state = 'diverged' AS diverged
FROM trials t;
)sql",
};

}  // namespace megabatch::store

#endif  // MEGABATCH_SERVER_STORE_SCHEMA_H_
