// The results database schema, one entry per version. Migration i (1-based)
// takes a database from user_version i-1 to i. Append; never edit a shipped
// migration. docs/results-database.md documents the tables and views.
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
    // Version 2: trial_summary gains samples, best_test_loss,
    // samples_to_target and gradient_noise_scale; sweep_scaling answers
    // "which lr is best at each batch size, and how well does it scale".
    R"sql(
DROP VIEW trial_summary;
CREATE VIEW trial_summary AS
SELECT
  t.id AS trial_id, t.sweep_id, t.trial_index, t.optimizer, t.batch_size,
  t.lr, t.lr_multiplier, t.seed, t.state, t.attempts,
  t.finished_at - t.started_at AS seconds,
  (SELECT MAX(step) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'train_loss') AS steps,
  (SELECT MAX(step) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'train_loss') * t.batch_size AS samples,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'train_loss'
     ORDER BY step DESC LIMIT 1) AS final_train_loss,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'test_loss'
     ORDER BY step DESC LIMIT 1) AS final_test_loss,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'test_accuracy'
     ORDER BY step DESC LIMIT 1) AS final_test_accuracy,
  (SELECT MAX(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'test_accuracy') AS best_test_accuracy,
  (SELECT MIN(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'test_loss') AS best_test_loss,
  (SELECT MIN(step) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'target_reached_seconds') AS steps_to_target,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'target_reached_samples' ORDER BY step LIMIT 1) AS samples_to_target,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'target_reached_seconds' ORDER BY step LIMIT 1) AS seconds_to_target,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'gradient_noise_scale' ORDER BY step DESC LIMIT 1) AS gradient_noise_scale,
  t.state = 'diverged' AS diverged
FROM trials t;
CREATE VIEW sweep_scaling AS
WITH per_lr AS (
  -- Seeds of one (optimizer, batch size, lr) averaged; to-target figures
  -- only when every seed reached the target.
  SELECT ts.sweep_id, ts.optimizer, ts.batch_size, ts.lr,
    COUNT(*) AS trials,
    SUM(ts.diverged) AS diverged_trials,
    AVG(ts.best_test_accuracy) AS best_test_accuracy,
    AVG(ts.best_test_loss) AS best_test_loss,
    CASE WHEN COUNT(ts.steps_to_target) = COUNT(*)
      THEN AVG(ts.steps_to_target) END AS steps_to_target,
    CASE WHEN COUNT(ts.samples_to_target) = COUNT(*)
      THEN AVG(ts.samples_to_target) END AS samples_to_target,
    CASE WHEN COUNT(ts.seconds_to_target) = COUNT(*)
      THEN AVG(ts.seconds_to_target) END AS seconds_to_target,
    AVG(ts.gradient_noise_scale) AS gradient_noise_scale,
    json_extract(s.spec_json, '$.target.metric') = 'test_loss' AS by_loss
  FROM trial_summary ts JOIN sweeps s ON s.id = ts.sweep_id
  GROUP BY ts.sweep_id, ts.optimizer, ts.batch_size, ts.lr
),
ranked AS (
  -- Best first: fewest steps to target, then no divergence, then the best
  -- value of the target metric (test_accuracy when there is no target).
  SELECT *,
    ROW_NUMBER() OVER (g ORDER BY steps_to_target IS NULL, steps_to_target,
      diverged_trials > 0,
      CASE WHEN by_loss THEN best_test_loss ELSE -best_test_accuracy END IS NULL,
      CASE WHEN by_loss THEN best_test_loss ELSE -best_test_accuracy END,
      lr) AS rank,
    COUNT(*) OVER g AS lrs_tried,
    SUM(trials) OVER g AS all_trials,
    SUM(diverged_trials) OVER g AS all_diverged,
    MAX(CASE WHEN diverged_trials = 0 THEN lr END) OVER g AS max_stable_lr
  FROM per_lr
  WINDOW g AS (PARTITION BY sweep_id, optimizer, batch_size)
),
best AS (SELECT * FROM ranked WHERE rank = 1)
SELECT b.sweep_id, b.optimizer, b.batch_size, b.lrs_tried,
  b.all_trials AS trials, b.all_diverged AS diverged_trials,
  b.lr AS best_lr, b.max_stable_lr, b.best_test_accuracy, b.best_test_loss,
  b.steps_to_target, b.samples_to_target, b.seconds_to_target,
  -- E(b) = S(b0)·b0 / (S(b)·b), b0 the smallest batch that reached the target.
  (SELECT r.steps_to_target * r.batch_size FROM best r
     WHERE r.sweep_id = b.sweep_id AND r.optimizer = b.optimizer
       AND r.steps_to_target IS NOT NULL
     ORDER BY r.batch_size LIMIT 1) / (b.steps_to_target * b.batch_size)
    AS scaling_efficiency,
  b.gradient_noise_scale
FROM best b;
)sql",
    // Version 3: indexes for leasing (a sweep's first queued trial) and for
    // finding active sweeps, so a lease costs the same whatever the queue.
    R"sql(
CREATE INDEX trials_queue ON trials (sweep_id, state, trial_index);
CREATE INDEX sweeps_by_state ON sweeps (state);
)sql",
    // Version 4: successive halving. One row per trial that reached a rung
    // (samples seen >= min_samples · reduction_factor^rung): the value of the
    // early-stopping metric at the first evaluation at or after it.
    R"sql(
CREATE TABLE rungs (
  sweep_id  INTEGER NOT NULL REFERENCES sweeps(id),
  rung      INTEGER NOT NULL,
  trial_id  INTEGER NOT NULL REFERENCES trials(id),
  samples   INTEGER NOT NULL,
  value     REAL,
  PRIMARY KEY (sweep_id, rung, trial_id)
) WITHOUT ROWID;
)sql",
    // Version 5: access tokens (only their SHA-256 is stored) and the owner
    // of each sweep (the name of the token that submitted it; NULL when the
    // coordinator ran without authentication).
    R"sql(
CREATE TABLE tokens (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL,
  role        TEXT NOT NULL CHECK (role IN ('admin', 'user', 'worker')),
  sha256      TEXT NOT NULL UNIQUE,
  created_at  REAL NOT NULL,
  revoked_at  REAL
);
ALTER TABLE sweeps ADD COLUMN owner TEXT;
)sql",
    // Version 6: data-parallel trials. A trial runs as `ranks` ranks; rank 0
    // is the trial row's worker_id, ranks 1.. are in trial_ranks under the
    // lease they were placed with; rank 0's worker serves the rendezvous on
    // rendezvous_port, from the range its worker registered with. The view
    // `holdings` lists every (trial, lease, rank, worker) of running trials.
    R"sql(
ALTER TABLE trials ADD COLUMN ranks INTEGER NOT NULL DEFAULT 1;
ALTER TABLE trials ADD COLUMN rendezvous_port INTEGER;
CREATE TABLE trial_ranks (
  trial_id   INTEGER NOT NULL REFERENCES trials(id),
  rank       INTEGER NOT NULL,
  lease_id   INTEGER NOT NULL,
  worker_id  INTEGER NOT NULL REFERENCES workers(id),
  PRIMARY KEY (trial_id, rank)
) WITHOUT ROWID;
CREATE INDEX trial_ranks_by_worker ON trial_ranks (worker_id);
ALTER TABLE workers ADD COLUMN rendezvous_host TEXT NOT NULL DEFAULT '127.0.0.1';
ALTER TABLE workers ADD COLUMN rendezvous_port_first INTEGER NOT NULL DEFAULT 29500;
ALTER TABLE workers ADD COLUMN rendezvous_port_count INTEGER NOT NULL DEFAULT 100;
CREATE VIEW holdings AS
  SELECT id AS trial_id, lease_id, 0 AS rank, worker_id FROM trials
    WHERE state = 'running'
  UNION ALL
  SELECT r.trial_id, r.lease_id, r.rank, r.worker_id FROM trial_ranks r
    JOIN trials t ON t.id = r.trial_id AND t.lease_id = r.lease_id AND t.state = 'running';
)sql",
    // Version 7: study numbers (docs/method.md). Selection reads the
    // validation split (val_*); test_* is the one final test evaluation.
    // steps_to_target is the interpolated crossing (target_reached_steps;
    // trials run before it fall back to the first evaluation at or past the
    // target). The gradient noise scale at fixed points of the budget.
    // sweep_scaling ranks lrs by the target metric, whatever it is.
    R"sql(
DROP VIEW sweep_scaling;
DROP VIEW trial_summary;
CREATE VIEW trial_summary AS
SELECT
  t.id AS trial_id, t.sweep_id, t.trial_index, t.optimizer, t.batch_size,
  t.lr, t.lr_multiplier, t.seed, t.state, t.attempts,
  t.finished_at - t.started_at AS seconds,
  (SELECT MAX(step) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'train_loss') AS steps,
  (SELECT MAX(step) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'train_loss') * t.batch_size AS samples,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'train_samples'
     ORDER BY step LIMIT 1) AS train_samples,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'train_loss'
     ORDER BY step DESC LIMIT 1) AS final_train_loss,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'val_loss'
     ORDER BY step DESC LIMIT 1) AS final_val_loss,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'val_accuracy'
     ORDER BY step DESC LIMIT 1) AS final_val_accuracy,
  (SELECT MAX(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'val_accuracy') AS best_val_accuracy,
  (SELECT MIN(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'val_loss') AS best_val_loss,
  sw.target_metric,
  COALESCE(
    (SELECT CASE WHEN sw.higher_is_better THEN MAX(value) ELSE MIN(value) END
       FROM metrics m WHERE m.trial_id = t.id AND m.name = sw.target_metric),
    (SELECT CASE WHEN sw.higher_is_better THEN MAX(value) ELSE MIN(value) END
       FROM metrics m WHERE m.trial_id = t.id AND m.name = sw.legacy_metric))
    AS best_target_value,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'test_loss'
     ORDER BY step DESC LIMIT 1) AS test_loss,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'test_accuracy'
     ORDER BY step DESC LIMIT 1) AS test_accuracy,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'test_loss'
     ORDER BY step DESC LIMIT 1) AS final_test_loss,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'test_accuracy'
     ORDER BY step DESC LIMIT 1) AS final_test_accuracy,
  (SELECT MAX(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'test_accuracy') AS best_test_accuracy,
  (SELECT MIN(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'test_loss') AS best_test_loss,
  COALESCE(
    (SELECT value FROM metrics m WHERE m.trial_id = t.id
       AND m.name = 'target_reached_steps' ORDER BY step LIMIT 1),
    (SELECT MIN(step) FROM metrics m
       WHERE m.trial_id = t.id AND m.name = 'target_reached_seconds')) AS steps_to_target,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'target_reached_samples' ORDER BY step LIMIT 1) AS samples_to_target,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'target_reached_seconds' ORDER BY step LIMIT 1) AS seconds_to_target,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'target_bracket_samples' ORDER BY step LIMIT 1) AS target_bracket_samples,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'gradient_noise_scale' ORDER BY step DESC LIMIT 1) AS gradient_noise_scale,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'noise_scale_at_10pct' ORDER BY step LIMIT 1) AS noise_scale_at_10pct,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'noise_scale_at_50pct' ORDER BY step LIMIT 1) AS noise_scale_at_50pct,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'noise_scale_at_100pct' ORDER BY step LIMIT 1) AS noise_scale_at_100pct,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'noise_scale_at_target' ORDER BY step LIMIT 1) AS noise_scale_at_target,
  t.state = 'diverged' AS diverged
FROM trials t JOIN (
  SELECT id, metric AS target_metric, metric LIKE '%accuracy' AS higher_is_better,
    CASE metric WHEN 'val_accuracy' THEN 'test_accuracy'
      WHEN 'val_loss' THEN 'test_loss' ELSE metric END AS legacy_metric
  FROM (SELECT id, CASE COALESCE(json_extract(spec_json, '$.target.metric'), 'val_accuracy')
          WHEN 'test_accuracy' THEN 'val_accuracy' WHEN 'test_loss' THEN 'val_loss'
          ELSE COALESCE(json_extract(spec_json, '$.target.metric'), 'val_accuracy') END
          AS metric FROM sweeps)
) sw ON sw.id = t.sweep_id;
CREATE VIEW sweep_scaling AS
WITH per_lr AS (
  -- Seeds of one (optimizer, batch size, lr) averaged; to-target figures
  -- only when every seed reached the target.
  SELECT ts.sweep_id, ts.optimizer, ts.batch_size, ts.lr,
    COUNT(*) AS trials,
    SUM(ts.diverged) AS diverged_trials,
    MAX(ts.target_metric LIKE '%accuracy') AS higher_is_better,
    AVG(ts.best_target_value) AS best_target_value,
    AVG(ts.best_val_accuracy) AS best_val_accuracy,
    AVG(ts.best_val_loss) AS best_val_loss,
    AVG(ts.best_test_accuracy) AS best_test_accuracy,
    AVG(ts.best_test_loss) AS best_test_loss,
    AVG(ts.test_accuracy) AS test_accuracy,
    AVG(ts.test_loss) AS test_loss,
    CASE WHEN COUNT(ts.steps_to_target) = COUNT(*)
      THEN AVG(ts.steps_to_target) END AS steps_to_target,
    CASE WHEN COUNT(ts.samples_to_target) = COUNT(*)
      THEN AVG(ts.samples_to_target) END AS samples_to_target,
    CASE WHEN COUNT(ts.seconds_to_target) = COUNT(*)
      THEN AVG(ts.seconds_to_target) END AS seconds_to_target,
    AVG(ts.gradient_noise_scale) AS gradient_noise_scale,
    AVG(ts.noise_scale_at_10pct) AS noise_scale_at_10pct,
    AVG(ts.noise_scale_at_50pct) AS noise_scale_at_50pct,
    AVG(ts.noise_scale_at_100pct) AS noise_scale_at_100pct,
    AVG(ts.noise_scale_at_target) AS noise_scale_at_target,
    MAX(ts.train_samples) AS train_samples
  FROM trial_summary ts
  GROUP BY ts.sweep_id, ts.optimizer, ts.batch_size, ts.lr
),
ranked AS (
  -- Best first: fewest steps to target, then no divergence, then the best
  -- value of the target metric (val_accuracy when there is no target).
  SELECT *,
    ROW_NUMBER() OVER (g ORDER BY steps_to_target IS NULL, steps_to_target,
      diverged_trials > 0,
      best_target_value IS NULL,
      CASE WHEN higher_is_better THEN -best_target_value ELSE best_target_value END,
      lr) AS rank,
    COUNT(*) OVER g AS lrs_tried,
    SUM(trials) OVER g AS all_trials,
    SUM(diverged_trials) OVER g AS all_diverged,
    MAX(CASE WHEN diverged_trials = 0 THEN lr END) OVER g AS max_stable_lr
  FROM per_lr
  WINDOW g AS (PARTITION BY sweep_id, optimizer, batch_size)
),
best AS (SELECT * FROM ranked WHERE rank = 1)
SELECT b.sweep_id, b.optimizer, b.batch_size, b.lrs_tried,
  b.all_trials AS trials, b.all_diverged AS diverged_trials,
  b.lr AS best_lr, b.max_stable_lr, b.best_test_accuracy, b.best_test_loss,
  b.steps_to_target, b.samples_to_target, b.seconds_to_target,
  -- E(b) = S(b0)·b0 / (S(b)·b), b0 the smallest batch that reached the target.
  (SELECT r.steps_to_target * r.batch_size FROM best r
     WHERE r.sweep_id = b.sweep_id AND r.optimizer = b.optimizer
       AND r.steps_to_target IS NOT NULL
     ORDER BY r.batch_size LIMIT 1) / (b.steps_to_target * b.batch_size)
    AS scaling_efficiency,
  b.gradient_noise_scale,
  b.best_val_accuracy, b.best_val_loss, b.best_target_value,
  b.test_accuracy, b.test_loss,
  b.noise_scale_at_10pct, b.noise_scale_at_50pct, b.noise_scale_at_100pct,
  b.noise_scale_at_target, b.train_samples
FROM best b;
)sql",
    // Version 8: request ids are scoped to the sweep's owner ('' without
    // authentication) and remembered here; sweeps.request_id is no longer
    // written (its UNIQUE constraint was global across owners).
    R"sql(
CREATE TABLE sweep_requests (
  owner       TEXT NOT NULL,
  request_id  TEXT NOT NULL,
  sweep_id    INTEGER NOT NULL REFERENCES sweeps(id),
  PRIMARY KEY (owner, request_id)
) WITHOUT ROWID;
INSERT INTO sweep_requests (owner, request_id, sweep_id)
  SELECT coalesce(owner, ''), request_id, id FROM sweeps WHERE request_id IS NOT NULL;
)sql",
    // Version 9: the threads each trial ran with, whether it shared cores
    // with other trainers at any time (shared_cores, 0 or 1; NULL before
    // version 9), and its mean training throughput; sweep_scaling counts
    // the best lr's trials that shared cores, whose time figures
    // (seconds_to_target, samples_per_second) are not results. Adaptive
    // studies: trials.phase (probe, search or finish; NULL in a grid), and
    // sweep_scaling reads only grid and finish trials (probe and search runs
    // train a fraction of the budget).
    R"sql(
ALTER TABLE trials ADD COLUMN phase TEXT;
DROP VIEW sweep_scaling;
DROP VIEW trial_summary;
CREATE VIEW trial_summary AS
SELECT
  t.id AS trial_id, t.sweep_id, t.trial_index, t.optimizer, t.batch_size,
  t.lr, t.lr_multiplier, t.seed, t.state, t.attempts, t.phase,
  t.finished_at - t.started_at AS seconds,
  (SELECT MAX(step) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'train_loss') AS steps,
  (SELECT MAX(step) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'train_loss') * t.batch_size AS samples,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'train_samples'
     ORDER BY step LIMIT 1) AS train_samples,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'train_loss'
     ORDER BY step DESC LIMIT 1) AS final_train_loss,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'val_loss'
     ORDER BY step DESC LIMIT 1) AS final_val_loss,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'val_accuracy'
     ORDER BY step DESC LIMIT 1) AS final_val_accuracy,
  (SELECT MAX(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'val_accuracy') AS best_val_accuracy,
  (SELECT MIN(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'val_loss') AS best_val_loss,
  sw.target_metric,
  COALESCE(
    (SELECT CASE WHEN sw.higher_is_better THEN MAX(value) ELSE MIN(value) END
       FROM metrics m WHERE m.trial_id = t.id AND m.name = sw.target_metric),
    (SELECT CASE WHEN sw.higher_is_better THEN MAX(value) ELSE MIN(value) END
       FROM metrics m WHERE m.trial_id = t.id AND m.name = sw.legacy_metric))
    AS best_target_value,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'test_loss'
     ORDER BY step DESC LIMIT 1) AS test_loss,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'test_accuracy'
     ORDER BY step DESC LIMIT 1) AS test_accuracy,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'test_loss'
     ORDER BY step DESC LIMIT 1) AS final_test_loss,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'test_accuracy'
     ORDER BY step DESC LIMIT 1) AS final_test_accuracy,
  (SELECT MAX(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'test_accuracy') AS best_test_accuracy,
  (SELECT MIN(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'test_loss') AS best_test_loss,
  COALESCE(
    (SELECT value FROM metrics m WHERE m.trial_id = t.id
       AND m.name = 'target_reached_steps' ORDER BY step LIMIT 1),
    (SELECT MIN(step) FROM metrics m
       WHERE m.trial_id = t.id AND m.name = 'target_reached_seconds')) AS steps_to_target,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'target_reached_samples' ORDER BY step LIMIT 1) AS samples_to_target,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'target_reached_seconds' ORDER BY step LIMIT 1) AS seconds_to_target,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'target_bracket_samples' ORDER BY step LIMIT 1) AS target_bracket_samples,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'gradient_noise_scale' ORDER BY step DESC LIMIT 1) AS gradient_noise_scale,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'noise_scale_at_10pct' ORDER BY step LIMIT 1) AS noise_scale_at_10pct,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'noise_scale_at_50pct' ORDER BY step LIMIT 1) AS noise_scale_at_50pct,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'noise_scale_at_100pct' ORDER BY step LIMIT 1) AS noise_scale_at_100pct,
  (SELECT value FROM metrics m WHERE m.trial_id = t.id
     AND m.name = 'noise_scale_at_target' ORDER BY step LIMIT 1) AS noise_scale_at_target,
  (SELECT MAX(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'threads') AS threads,
  (SELECT MAX(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'shared_cores') AS shared_cores,
  (SELECT AVG(value) FROM metrics m
     WHERE m.trial_id = t.id AND m.name = 'samples_per_second') AS samples_per_second,
  t.state = 'diverged' AS diverged
FROM trials t JOIN (
  SELECT id, metric AS target_metric, metric LIKE '%accuracy' AS higher_is_better,
    CASE metric WHEN 'val_accuracy' THEN 'test_accuracy'
      WHEN 'val_loss' THEN 'test_loss' ELSE metric END AS legacy_metric
  FROM (SELECT id, CASE COALESCE(json_extract(spec_json, '$.target.metric'), 'val_accuracy')
          WHEN 'test_accuracy' THEN 'val_accuracy' WHEN 'test_loss' THEN 'val_loss'
          ELSE COALESCE(json_extract(spec_json, '$.target.metric'), 'val_accuracy') END
          AS metric FROM sweeps)
) sw ON sw.id = t.sweep_id;
CREATE VIEW sweep_scaling AS
WITH per_lr AS (
  -- Seeds of one (optimizer, batch size, lr) averaged; to-target figures
  -- only when every seed reached the target.
  SELECT ts.sweep_id, ts.optimizer, ts.batch_size, ts.lr,
    COUNT(*) AS trials,
    SUM(ts.diverged) AS diverged_trials,
    MAX(ts.target_metric LIKE '%accuracy') AS higher_is_better,
    AVG(ts.best_target_value) AS best_target_value,
    AVG(ts.best_val_accuracy) AS best_val_accuracy,
    AVG(ts.best_val_loss) AS best_val_loss,
    AVG(ts.best_test_accuracy) AS best_test_accuracy,
    AVG(ts.best_test_loss) AS best_test_loss,
    AVG(ts.test_accuracy) AS test_accuracy,
    AVG(ts.test_loss) AS test_loss,
    CASE WHEN COUNT(ts.steps_to_target) = COUNT(*)
      THEN AVG(ts.steps_to_target) END AS steps_to_target,
    CASE WHEN COUNT(ts.samples_to_target) = COUNT(*)
      THEN AVG(ts.samples_to_target) END AS samples_to_target,
    CASE WHEN COUNT(ts.seconds_to_target) = COUNT(*)
      THEN AVG(ts.seconds_to_target) END AS seconds_to_target,
    AVG(ts.gradient_noise_scale) AS gradient_noise_scale,
    AVG(ts.noise_scale_at_10pct) AS noise_scale_at_10pct,
    AVG(ts.noise_scale_at_50pct) AS noise_scale_at_50pct,
    AVG(ts.noise_scale_at_100pct) AS noise_scale_at_100pct,
    AVG(ts.noise_scale_at_target) AS noise_scale_at_target,
    MAX(ts.train_samples) AS train_samples,
    AVG(ts.samples_per_second) AS samples_per_second,
    SUM(COALESCE(ts.shared_cores, 0) > 0) AS shared_core_trials
  FROM trial_summary ts
  WHERE ts.phase IS NULL OR ts.phase = 'finish'
  GROUP BY ts.sweep_id, ts.optimizer, ts.batch_size, ts.lr
),
ranked AS (
  -- Best first: fewest steps to target, then no divergence, then the best
  -- value of the target metric (val_accuracy when there is no target).
  SELECT *,
    ROW_NUMBER() OVER (g ORDER BY steps_to_target IS NULL, steps_to_target,
      diverged_trials > 0,
      best_target_value IS NULL,
      CASE WHEN higher_is_better THEN -best_target_value ELSE best_target_value END,
      lr) AS rank,
    COUNT(*) OVER g AS lrs_tried,
    SUM(trials) OVER g AS all_trials,
    SUM(diverged_trials) OVER g AS all_diverged,
    MAX(CASE WHEN diverged_trials = 0 THEN lr END) OVER g AS max_stable_lr
  FROM per_lr
  WINDOW g AS (PARTITION BY sweep_id, optimizer, batch_size)
),
best AS (SELECT * FROM ranked WHERE rank = 1)
SELECT b.sweep_id, b.optimizer, b.batch_size, b.lrs_tried,
  b.all_trials AS trials, b.all_diverged AS diverged_trials,
  b.lr AS best_lr, b.max_stable_lr, b.best_test_accuracy, b.best_test_loss,
  b.steps_to_target, b.samples_to_target, b.seconds_to_target,
  -- E(b) = S(b0)·b0 / (S(b)·b), b0 the smallest batch that reached the target.
  (SELECT r.steps_to_target * r.batch_size FROM best r
     WHERE r.sweep_id = b.sweep_id AND r.optimizer = b.optimizer
       AND r.steps_to_target IS NOT NULL
     ORDER BY r.batch_size LIMIT 1) / (b.steps_to_target * b.batch_size)
    AS scaling_efficiency,
  b.gradient_noise_scale,
  b.best_val_accuracy, b.best_val_loss, b.best_target_value,
  b.test_accuracy, b.test_loss,
  b.noise_scale_at_10pct, b.noise_scale_at_50pct, b.noise_scale_at_100pct,
  b.noise_scale_at_target, b.train_samples, b.samples_per_second, b.shared_core_trials
FROM best b;
)sql",
    // Version 10: the id floors a restore from a backup sets
    // (megabatch-coordinator restore): a new sweep, trial or worker gets an
    // id at or above its table's floor, so no id the lost coordinator gave
    // out after the backup is given out again.
    R"sql(
CREATE TABLE id_floors (
  name  TEXT PRIMARY KEY,
  next  INTEGER NOT NULL
) WITHOUT ROWID;
)sql",
    // Version 11: a worker belongs to the credential that registered it (a
    // token's name or a client certificate's common name; '' without
    // authentication): only that credential may act for it. The audit table
    // records who did what (docs/security.md).
    R"sql(
ALTER TABLE workers ADD COLUMN owner TEXT NOT NULL DEFAULT '';
CREATE TABLE audit (
  id      INTEGER PRIMARY KEY,
  at      REAL NOT NULL,
  caller  TEXT NOT NULL,
  role    TEXT NOT NULL,
  action  TEXT NOT NULL,
  object  TEXT NOT NULL,
  status  TEXT NOT NULL,
  detail  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_by_caller ON audit (caller, at);
)sql",
    // Version 12: sweep_scaling says where each best lr sits among the lrs
    // tried (best_lr_edge), how many other lrs tie with it within one
    // evaluation interval (lrs_tied), and which (optimizer, batch size)
    // reached no target within its budget (censored).
    R"sql(
DROP VIEW sweep_scaling;
CREATE VIEW sweep_scaling AS
WITH per_lr AS (
  -- Seeds of one (optimizer, batch size, lr) averaged; to-target figures
  -- only when every seed reached the target.
  SELECT ts.sweep_id, ts.optimizer, ts.batch_size, ts.lr,
    COUNT(*) AS trials,
    SUM(ts.diverged) AS diverged_trials,
    MAX(ts.target_metric LIKE '%accuracy') AS higher_is_better,
    AVG(ts.best_target_value) AS best_target_value,
    AVG(ts.best_val_accuracy) AS best_val_accuracy,
    AVG(ts.best_val_loss) AS best_val_loss,
    AVG(ts.best_test_accuracy) AS best_test_accuracy,
    AVG(ts.best_test_loss) AS best_test_loss,
    AVG(ts.test_accuracy) AS test_accuracy,
    AVG(ts.test_loss) AS test_loss,
    CASE WHEN COUNT(ts.steps_to_target) = COUNT(*)
      THEN AVG(ts.steps_to_target) END AS steps_to_target,
    CASE WHEN COUNT(ts.samples_to_target) = COUNT(*)
      THEN AVG(ts.samples_to_target) END AS samples_to_target,
    CASE WHEN COUNT(ts.seconds_to_target) = COUNT(*)
      THEN AVG(ts.seconds_to_target) END AS seconds_to_target,
    AVG(ts.gradient_noise_scale) AS gradient_noise_scale,
    AVG(ts.noise_scale_at_10pct) AS noise_scale_at_10pct,
    AVG(ts.noise_scale_at_50pct) AS noise_scale_at_50pct,
    AVG(ts.noise_scale_at_100pct) AS noise_scale_at_100pct,
    AVG(ts.noise_scale_at_target) AS noise_scale_at_target,
    MAX(ts.train_samples) AS train_samples,
    AVG(ts.samples_per_second) AS samples_per_second,
    SUM(COALESCE(ts.shared_cores, 0) > 0) AS shared_core_trials,
    SUM(ts.state = 'completed') AS completed_trials
  FROM trial_summary ts
  WHERE ts.phase IS NULL OR ts.phase = 'finish'
  GROUP BY ts.sweep_id, ts.optimizer, ts.batch_size, ts.lr
),
ranked AS (
  -- Best first: fewest steps to target, then no divergence, then the best
  -- value of the target metric (val_accuracy when there is no target).
  SELECT *,
    ROW_NUMBER() OVER (g ORDER BY steps_to_target IS NULL, steps_to_target,
      diverged_trials > 0,
      best_target_value IS NULL,
      CASE WHEN higher_is_better THEN -best_target_value ELSE best_target_value END,
      lr) AS rank,
    COUNT(*) OVER g AS lrs_tried,
    SUM(trials) OVER g AS all_trials,
    SUM(diverged_trials) OVER g AS all_diverged,
    MAX(CASE WHEN diverged_trials = 0 THEN lr END) OVER g AS max_stable_lr,
    MIN(lr) OVER g AS min_lr, MAX(lr) OVER g AS max_lr,
    SUM(completed_trials) OVER g AS all_completed
  FROM per_lr
  WINDOW g AS (PARTITION BY sweep_id, optimizer, batch_size)
),
best AS (SELECT * FROM ranked WHERE rank = 1)
SELECT b.sweep_id, b.optimizer, b.batch_size, b.lrs_tried,
  b.all_trials AS trials, b.all_diverged AS diverged_trials,
  b.lr AS best_lr, b.max_stable_lr, b.best_test_accuracy, b.best_test_loss,
  b.steps_to_target, b.samples_to_target, b.seconds_to_target,
  -- E(b) = S(b0)·b0 / (S(b)·b), b0 the smallest batch that reached the target.
  (SELECT r.steps_to_target * r.batch_size FROM best r
     WHERE r.sweep_id = b.sweep_id AND r.optimizer = b.optimizer
       AND r.steps_to_target IS NOT NULL
     ORDER BY r.batch_size LIMIT 1) / (b.steps_to_target * b.batch_size)
    AS scaling_efficiency,
  b.gradient_noise_scale,
  b.best_val_accuracy, b.best_val_loss, b.best_target_value,
  b.test_accuracy, b.test_loss,
  b.noise_scale_at_10pct, b.noise_scale_at_50pct, b.noise_scale_at_100pct,
  b.noise_scale_at_target, b.train_samples, b.samples_per_second, b.shared_core_trials,
  -- Where the best lr sits among the lrs tried: a best at an edge may not
  -- be the best there is (docs/method.md, "Edges, ties and censoring").
  CASE WHEN b.lrs_tried = 1 THEN 'only' WHEN b.lr = b.max_lr THEN 'high'
    WHEN b.lr = b.min_lr THEN 'low' ELSE '' END AS best_lr_edge,
  -- Other lrs whose steps to target are within one evaluation interval of
  -- the best's: which of them is best is within the measurement's noise.
  (SELECT COUNT(*) FROM ranked r
     WHERE r.sweep_id = b.sweep_id AND r.optimizer = b.optimizer
       AND r.batch_size = b.batch_size AND r.rank > 1
       AND r.steps_to_target - b.steps_to_target <
         (SELECT CASE
            WHEN json_extract(s.spec_json, '$.eval_every_steps') > 0
              THEN json_extract(s.spec_json, '$.eval_every_steps')
            WHEN json_extract(s.spec_json, '$.eval_every_samples') > 0
              THEN json_extract(s.spec_json, '$.eval_every_samples') * 1.0
                / b.batch_size
            ELSE b.train_samples / b.batch_size END
          FROM sweeps s WHERE s.id = b.sweep_id)) AS lrs_tied,
  -- A target study whose trials ran their whole budget here without any lr
  -- reaching the target: the steps it needs are beyond the budget.
  COALESCE(b.steps_to_target IS NULL AND b.all_completed > 0 AND
    (SELECT json_extract(s.spec_json, '$.target.value') IS NOT NULL
       FROM sweeps s WHERE s.id = b.sweep_id), 0) AS censored
FROM best b;
)sql",
};

}  // namespace megabatch::store

#endif  // MEGABATCH_SERVER_STORE_SCHEMA_H_
