#include "server/store/sweep_store.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>
#include <set>
#include <sstream>

#include "common/selection_metrics.h"
#include "common/trial_config.h"
#include "server/planner/adaptive.h"
#include "server/planner/early_stopping.h"
#include "server/planner/lr_edges.h"
#include "server/store/schema.h"

namespace megabatch::store {
namespace {

constexpr int kNumMigrations = std::size(kMigrations);
static_assert(kNumMigrations == kSchemaVersion);
constexpr size_t kMaxStoredStderr = 8192;

// The id of a new row of `table`: one past its largest, and at least the
// floor a restore from a backup set (id_floors, RestoreFencing).
std::string NextIdSql(const std::string& table) {
  return "max((SELECT coalesce(max(id), 0) + 1 FROM " + table +
         "), (SELECT coalesce(max(next), 0) FROM id_floors WHERE name = '" +
         table + "'))";
}

}  // namespace

const std::string& SweepStore::HeldSlotsSql() {
  static const std::string sql =
      "((SELECT count(*) FROM trials t WHERE t.worker_id = w.id AND t.state = "
      "'running') + "
      "(SELECT count(*) FROM trial_ranks r JOIN trials t ON t.id = r.trial_id "
      "AND t.lease_id = r.lease_id AND t.state = 'running' WHERE r.worker_id = "
      "w.id))";
  return sql;
}

const char* TrialStateName(TrialState s) {
  for (const auto& [state, name] : kTrialStateNames) {
    if (state == s) return name;
  }
  return "unknown";
}
const char* SweepStateName(SweepState s) {
  for (const auto& [state, name] : kSweepStateNames) {
    if (state == s) return name;
  }
  return "unknown";
}
std::optional<TrialState> ParseTrialState(std::string_view name) {
  for (const auto& [state, n] : kTrialStateNames) {
    if (n == name) return state;
  }
  return std::nullopt;
}
std::optional<SweepState> ParseSweepState(std::string_view name) {
  for (const auto& [state, n] : kSweepStateNames) {
    if (n == name) return state;
  }
  return std::nullopt;
}

SweepStore::Locked::Locked(SweepStore* store) : store_(store) {
  store_->mu_.Lock();
}

SweepStore::Locked::~Locked() {
  const std::optional<Change> change = store_->pending_;
  store_->pending_.reset();
  store_->mu_.Unlock();
  if (!change) return;
  MutexLock lock(&store_->listener_mu_);
  if (store_->listener_) store_->listener_(*change);
}

void SweepStore::Changed(Change change) {
  ++version_;
  if (!pending_ || *pending_ < change) pending_ = change;
}

void SweepStore::SetListener(std::function<void(Change)> listener) {
  MutexLock lock(&listener_mu_);
  listener_ = std::move(listener);
}

Status SweepStore::SetMaxBytes(int64_t bytes) {
  Locked lock(this);
  MEGABATCH_ASSIGN_OR_RETURN(Statement size, db_->Prepare("PRAGMA page_size"));
  MEGABATCH_RETURN_IF_ERROR(size.Step().status());
  const int64_t page = std::max<int64_t>(1, size.Int(0));
  // SQLite's own ceiling when uncapped.
  const int64_t pages =
      bytes > 0 ? std::max<int64_t>(1, bytes / page) : 4294967294;
  return db_->Exec("PRAGMA max_page_count = " + std::to_string(pages));
}

Result<spec::SweepSpec> SweepStore::StoredSpecLocked(int64_t sweep_id) {
  MEGABATCH_ASSIGN_OR_RETURN(
      CachedStatement q,
      db_->Cached("SELECT spec_json FROM sweeps WHERE id = ?"));
  q->Bind(1, sweep_id);
  MEGABATCH_ASSIGN_OR_RETURN(bool row, q->Step());
  if (!row)
    return NotFoundError("sweep " + std::to_string(sweep_id) + " not found");
  Result<spec::SweepSpec> spec = spec::SweepSpecFromJson(
      nlohmann::json::parse(q->Text(0), nullptr, false));
  if (!spec.ok()) {
    return DataLossError(
        "sweep " + std::to_string(sweep_id) +
        ": stored spec no longer parses: " + spec.status().message());
  }
  return spec;
}

Result<std::unique_ptr<SweepStore>> SweepStore::Open(const std::string& path) {
  MEGABATCH_ASSIGN_OR_RETURN(std::unique_ptr<Db> db, Db::Open(path));
  std::unique_ptr<SweepStore> store(new SweepStore(std::move(db)));
  Locked lock(store.get());
  MEGABATCH_RETURN_IF_ERROR(store->Migrate());
  return store;
}

Status SweepStore::Migrate() {
  MEGABATCH_ASSIGN_OR_RETURN(Statement q, db_->Prepare("PRAGMA user_version"));
  MEGABATCH_RETURN_IF_ERROR(q.Step().status());
  int version = static_cast<int>(q.Int(0));
  if (version > kSchemaVersion) {
    return DataLossError("database schema version " + std::to_string(version) +
                         " is newer than this coordinator's " +
                         std::to_string(kSchemaVersion));
  }
  if (version == 0) {
    // A fresh file has no tables; anything else is not ours to migrate.
    MEGABATCH_ASSIGN_OR_RETURN(
        Statement tables,
        db_->Prepare("SELECT count(*) FROM sqlite_master WHERE type='table'"));
    MEGABATCH_RETURN_IF_ERROR(tables.Step().status());
    if (tables.Int(0) != 0) {
      return DataLossError(
          "database has tables but no megabatch schema version; refusing to "
          "use it");
    }
  }
  for (int v = version; v < kSchemaVersion; ++v) {
    Transaction tx(db_.get());
    MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
    MEGABATCH_RETURN_IF_ERROR(db_->Exec(kMigrations[v]));
    MEGABATCH_RETURN_IF_ERROR(
        db_->Exec("PRAGMA user_version=" + std::to_string(v + 1)));
    MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  }
  return Status();
}

Status SweepStore::AddEvent(int64_t sweep_id, int64_t trial_id,
                            int64_t worker_id, const std::string& kind,
                            const std::string& message, double now) {
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement st,
      db_->Prepare(
          "INSERT INTO events (at, sweep_id, trial_id, worker_id, kind, "
          "message) "
          "VALUES (?, nullif(?, 0), nullif(?, 0), nullif(?, 0), ?, ?)"));
  st.Bind(1, now).Bind(2, sweep_id).Bind(3, trial_id).Bind(4, worker_id);
  st.Bind(5, kind).Bind(6, message);
  return st.Run();
}

Result<SweepStore::CreatedSweep> SweepStore::CreateSweep(
    const spec::SweepSpec& spec, const std::vector<spec::TrialSpec>& trials,
    const std::string& request_id, double now, const std::string& owner) {
  Locked lock(this);
  const std::string spec_json = spec.ToJson().dump();
  if (!request_id.empty()) {
    MEGABATCH_ASSIGN_OR_RETURN(
        Statement q,
        db_->Prepare(
            "SELECT s.id, s.name, s.spec_json FROM sweep_requests r JOIN "
            "sweeps s "
            "ON s.id = r.sweep_id WHERE r.owner = ? AND r.request_id = ?"));
    q.Bind(1, owner).Bind(2, request_id);
    MEGABATCH_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) {
      if (q.Text(2) != spec_json) {
        return AlreadyExistsError(
            "request_id '" + request_id + "' was used for sweep " +
            std::to_string(q.Int(0)) + " ('" + q.Text(1) +
            "') with a different spec; use a new request id");
      }
      return CreatedSweep{q.Int(0), true};
    }
  }
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement ins,
      db_->Prepare("INSERT INTO sweeps (id, name, state, spec_json, priority, "
                   "max_parallel, max_retries, created_at, owner) VALUES (" +
                   NextIdSql("sweeps") +
                   ", ?, 'queued', ?, ?, ?, ?, ?, nullif(?, ''))"));
  ins.Bind(1, spec.name).Bind(2, spec_json);
  ins.Bind(3, spec.priority).Bind(4, spec.max_parallel);
  ins.Bind(5, spec.max_retries).Bind(6, now).Bind(7, owner);
  MEGABATCH_RETURN_IF_ERROR(ins.Run());
  int64_t sweep_id = db_->LastInsertRowid();
  if (!request_id.empty()) {
    MEGABATCH_ASSIGN_OR_RETURN(
        Statement remember, db_->Prepare("INSERT INTO sweep_requests (owner, "
                                         "request_id, sweep_id) VALUES (?, "
                                         "?, ?)"));
    remember.Bind(1, owner).Bind(2, request_id).Bind(3, sweep_id);
    MEGABATCH_RETURN_IF_ERROR(remember.Run());
  }

  MEGABATCH_RETURN_IF_ERROR(InsertTrialsLocked(
      sweep_id, trials, std::vector<std::string>(trials.size())));
  MEGABATCH_RETURN_IF_ERROR(AddEvent(
      sweep_id, 0, 0, "sweep_submitted",
      "sweep '" + spec.name + "' with " +
          (spec.strategy.is_null() ? std::to_string(trials.size()) + " trials"
                                   : std::string("an adaptive plan")),
      now));
  MEGABATCH_RETURN_IF_ERROR(PlanLocked(sweep_id, now));
  MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  Changed(Change::kWork);
  return CreatedSweep{sweep_id, false};
}

Status SweepStore::InsertTrialsLocked(
    int64_t sweep_id, const std::vector<spec::TrialSpec>& trials,
    const std::vector<std::string>& phases) {
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement trial,
      db_->Prepare("INSERT INTO trials (id, sweep_id, trial_index, optimizer, "
                   "batch_size, "
                   "lr, lr_multiplier, seed, state, config_json, ranks, phase) "
                   "VALUES (" +
                   NextIdSql("trials") +
                   ", ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, nullif(?, ''))"));
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement set_config,
      db_->Prepare("UPDATE trials SET config_json = ? WHERE id = ?"));
  for (size_t i = 0; i < trials.size(); ++i) {
    const spec::TrialSpec& t = trials[i];
    trial.Reset();
    trial.Bind(1, sweep_id).Bind(2, t.index).Bind(3, t.optimizer);
    trial.Bind(4, t.batch_size).Bind(5, t.lr).Bind(6, t.lr_multiplier);
    trial.Bind(7, t.seed)
        .Bind(8, t.config.dump())
        .Bind(9, t.ranks)
        .Bind(10, phases[i]);
    MEGABATCH_RETURN_IF_ERROR(trial.Run());
    int64_t trial_id = db_->LastInsertRowid();
    nlohmann::json config = t.config;
    SetCoordinatorIds(&config, trial_id, sweep_id);
    set_config.Reset();
    set_config.Bind(1, config.dump()).Bind(2, trial_id);
    MEGABATCH_RETURN_IF_ERROR(set_config.Run());
  }
  return Status();
}

Status SweepStore::PlanLocked(int64_t sweep_id, double now) {
  // Runs at every trial's end: a grid sweep (no strategy) costs one cached
  // probe, not a parse of its spec.
  MEGABATCH_ASSIGN_OR_RETURN(
      CachedStatement sweep,
      db_->Cached("SELECT state FROM sweeps WHERE id = ? "
                  "AND (json_extract(spec_json, '$.strategy') IS NOT NULL "
                  "OR json_extract(spec_json, '$.lr_edges') = 'extend')"));
  sweep->Bind(1, sweep_id);
  MEGABATCH_ASSIGN_OR_RETURN(bool found, sweep->Step());
  if (!found) return Status();
  const auto state = ParseSweepState(sweep->Text(0));
  if (state && IsFinal(*state)) return Status();
  MEGABATCH_ASSIGN_OR_RETURN(spec::SweepSpec spec, StoredSpecLocked(sweep_id));
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement q,
      db_->Prepare(
          "SELECT t.phase, t.optimizer, t.batch_size, t.lr, t.seed, t.state, "
          "s.samples_to_target, s.best_target_value, "
          "COALESCE(s.noise_scale_at_100pct, s.gradient_noise_scale), "
          "t.trial_index, t.lr_multiplier "
          "FROM trials t JOIN trial_summary s ON s.trial_id = t.id "
          "WHERE t.sweep_id = ? ORDER BY t.trial_index"));
  q.Bind(1, sweep_id);
  std::vector<planner::PlannedTrial> trials;
  int32_t next_index = 0;
  MEGABATCH_RETURN_IF_ERROR(ForEachRow(q, [&](Statement& r) {
    planner::PlannedTrial t;
    t.phase = r.Text(0);
    t.optimizer = r.Text(1);
    t.batch_size = r.Int(2);
    t.lr = r.Double(3);
    t.seed = r.Int(4);
    const TrialState st =
        ParseTrialState(r.Text(5)).value_or(TrialState::kQueued);
    t.ended = st != TrialState::kQueued && st != TrialState::kRunning;
    t.diverged = st == TrialState::kDiverged;
    t.completed = st == TrialState::kCompleted;
    t.samples_to_target = r.OptionalDouble(6);
    t.best_target_value = r.OptionalDouble(7);
    t.noise_scale = r.OptionalDouble(8);
    next_index = static_cast<int32_t>(r.Int(9)) + 1;
    t.lr_multiplier = r.Double(10);
    trials.push_back(std::move(t));
  }));
  planner::PlanStep step =
      spec.strategy.is_null() ? planner::ExtendLrEdges(spec, trials, next_index)
                              : planner::PlanAdaptive(spec, trials, next_index);
  MEGABATCH_RETURN_IF_ERROR(
      InsertTrialsLocked(sweep_id, step.trials, step.phases));
  for (const std::string& decision : step.decisions) {
    MEGABATCH_RETURN_IF_ERROR(AddEvent(sweep_id, 0, 0, "plan", decision, now));
  }
  return Status();
}

Result<SweepRow> SweepStore::GetSweepLocked(int64_t sweep_id) {
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement q,
      db_->Prepare(
          "SELECT id, name, state, priority, max_parallel, max_retries, "
          "created_at, coalesce(finished_at, 0), coalesce(owner, '') FROM "
          "sweeps "
          "WHERE id = ?"));
  q.Bind(1, sweep_id);
  MEGABATCH_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row)
    return NotFoundError("sweep " + std::to_string(sweep_id) + " not found");
  SweepRow s;
  s.id = q.Int(0);
  s.name = q.Text(1);
  s.state = ParseSweepState(q.Text(2)).value_or(SweepState::kQueued);
  s.priority = static_cast<int32_t>(q.Int(3));
  s.max_parallel = static_cast<int32_t>(q.Int(4));
  s.max_retries = static_cast<int32_t>(q.Int(5));
  s.created_at = q.Double(6);
  s.finished_at = q.Double(7);
  s.owner = q.Text(8);
  MEGABATCH_ASSIGN_OR_RETURN(Statement counts,
                             db_->Prepare("SELECT state, count(*) FROM trials "
                                          "WHERE sweep_id = ? GROUP BY state"));
  counts.Bind(1, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(ForEachRow(counts, [&](Statement& c) {
    if (auto st = ParseTrialState(c.Text(0))) {
      s.trial_counts[*st] = static_cast<int32_t>(c.Int(1));
      s.trials_total += static_cast<int32_t>(c.Int(1));
    }
  }));
  MEGABATCH_ASSIGN_OR_RETURN(CachedStatement phase, db_->Cached(R"sql(
    SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM trials WHERE sweep_id = ?1 AND phase IS NOT NULL)
      THEN '' ELSE COALESCE((SELECT phase FROM trials WHERE sweep_id = ?1 AND phase IS NOT NULL
        AND state IN ('queued', 'running')
        ORDER BY CASE phase WHEN 'probe' THEN 0 WHEN 'search' THEN 1 ELSE 2 END LIMIT 1),
      'done') END)sql"));
  phase->Bind(1, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(phase->Step().status());
  s.phase = phase->Text(0);
  return s;
}

Result<SweepRow> SweepStore::GetSweep(int64_t sweep_id) {
  Locked lock(this);
  return GetSweepLocked(sweep_id);
}

Result<std::vector<SweepRow>> SweepStore::ListSweeps(int64_t after_id,
                                                     int64_t limit) {
  Locked lock(this);
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement q,
      db_->Prepare("SELECT id FROM sweeps WHERE id > ? ORDER BY id LIMIT ?"));
  q.Bind(1, after_id).Bind(2, limit);
  std::vector<int64_t> ids;
  MEGABATCH_RETURN_IF_ERROR(
      ForEachRow(q, [&](Statement& s) { ids.push_back(s.Int(0)); }));
  std::vector<SweepRow> out;
  for (int64_t id : ids) {
    MEGABATCH_ASSIGN_OR_RETURN(SweepRow s, GetSweepLocked(id));
    out.push_back(std::move(s));
  }
  return out;
}

Status SweepStore::RefreshSweepState(int64_t sweep_id, double now) {
  // Index probes on trials (sweep_id, state), not a count of every trial:
  // this runs on every finished attempt.
  MEGABATCH_ASSIGN_OR_RETURN(CachedStatement probe, db_->Cached(R"sql(
    SELECT state,
      EXISTS (SELECT 1 FROM trials WHERE sweep_id = ?1 AND state IN ('queued', 'running')),
      EXISTS (SELECT 1 FROM trials WHERE sweep_id = ?1 AND state IN
              ('running', 'completed', 'failed', 'cancelled', 'diverged', 'pruned')),
      EXISTS (SELECT 1 FROM trials WHERE sweep_id = ?1 AND state = 'failed')
    FROM sweeps WHERE id = ?1)sql"));
  probe->Bind(1, sweep_id);
  MEGABATCH_ASSIGN_OR_RETURN(bool found, probe->Step());
  if (!found)
    return NotFoundError("sweep " + std::to_string(sweep_id) + " not found");
  const SweepState state =
      ParseSweepState(probe->Text(0)).value_or(SweepState::kQueued);
  const bool active = probe->Int(1) != 0, ever_started = probe->Int(2) != 0,
             any_failed = probe->Int(3) != 0;
  probe->Reset();
  if (IsFinal(state)) return Status();
  SweepState next = state;
  if (!active) {
    next = any_failed ? SweepState::kFailed : SweepState::kCompleted;
  } else if (ever_started) {
    next = SweepState::kRunning;
  }
  if (next == state) return Status();
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement up,
      db_->Prepare(
          "UPDATE sweeps SET state = ?, finished_at = ? WHERE id = ?"));
  up.Bind(1, SweepStateName(next));
  if (IsFinal(next)) {
    up.Bind(2, now);
  } else {
    up.BindNull(2);
  }
  up.Bind(3, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(up.Run());
  if (IsFinal(next)) {
    MEGABATCH_RETURN_IF_ERROR(
        AddEvent(sweep_id, 0, 0, "sweep_finished",
                 std::string("sweep ") + SweepStateName(next), now));
  }
  return Status();
}

Result<SweepRow> SweepStore::CancelSweep(int64_t sweep_id, double now) {
  Locked lock(this);
  MEGABATCH_ASSIGN_OR_RETURN(SweepRow s, GetSweepLocked(sweep_id));
  if (IsFinal(s.state)) {
    return FailedPreconditionError("sweep " + std::to_string(sweep_id) +
                                   " is " + SweepStateName(s.state) +
                                   "; cannot cancel");
  }
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement up,
      db_->Prepare("UPDATE trials SET state = 'cancelled', finished_at = ? "
                   "WHERE sweep_id = ? AND state IN ('queued', 'running')"));
  up.Bind(1, now).Bind(2, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(up.Run());
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement sw, db_->Prepare("UPDATE sweeps SET state = 'cancelled', "
                                 "finished_at = ? WHERE id = ?"));
  sw.Bind(1, now).Bind(2, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(sw.Run());
  MEGABATCH_RETURN_IF_ERROR(
      AddEvent(sweep_id, 0, 0, "sweep_cancelled", "cancelled by user", now));
  MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  Changed(Change::kWork);
  return GetSweepLocked(sweep_id);
}

Result<std::vector<TrialRow>> SweepStore::ListTrials(int64_t sweep_id,
                                                     int64_t after_index,
                                                     int64_t limit) {
  Locked lock(this);
  MEGABATCH_ASSIGN_OR_RETURN(SweepRow s, GetSweepLocked(sweep_id));
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement q,
      db_->Prepare(
          "SELECT id, sweep_id, trial_index, optimizer, batch_size, lr, "
          "lr_multiplier, seed, state, coalesce(worker_id, 0), lease_id, "
          "attempts, "
          "coalesce(error, ''), coalesce(started_at, 0), coalesce(finished_at, "
          "0), "
          "coalesce(phase, '') "
          "FROM trials WHERE sweep_id = ? AND trial_index > ? ORDER BY "
          "trial_index "
          "LIMIT ?"));
  q.Bind(1, sweep_id).Bind(2, after_index).Bind(3, limit);
  std::vector<TrialRow> out;
  MEGABATCH_RETURN_IF_ERROR(ForEachRow(q, [&](Statement& r) {
    TrialRow t;
    t.id = r.Int(0);
    t.sweep_id = r.Int(1);
    t.index = static_cast<int32_t>(r.Int(2));
    t.optimizer = r.Text(3);
    t.batch_size = r.Int(4);
    t.lr = r.Double(5);
    t.lr_multiplier = r.Double(6);
    t.seed = r.Int(7);
    t.state = ParseTrialState(r.Text(8)).value_or(TrialState::kQueued);
    t.worker_id = r.Int(9);
    t.lease_id = r.Int(10);
    t.attempts = static_cast<int32_t>(r.Int(11));
    t.error = r.Text(12);
    t.started_at = r.Double(13);
    t.finished_at = r.Double(14);
    t.phase = r.Text(15);
    out.push_back(std::move(t));
  }));
  // Each metric's value at its newest step: a walk over the trial's metric
  // names by index seeks (one per name, and one for its newest step), not a
  // scan of every point the trial stored.
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement latest,
      db_->Prepare(
          "WITH RECURSIVE names(n) AS ("
          " SELECT (SELECT name FROM metrics WHERE trial_id = ?1 ORDER BY name "
          "  LIMIT 1)"
          " UNION ALL"
          " SELECT (SELECT name FROM metrics WHERE trial_id = ?1 AND name > n "
          "  ORDER BY name LIMIT 1) FROM names WHERE n IS NOT NULL) "
          "SELECT n, (SELECT value FROM metrics WHERE trial_id = ?1 AND name = "
          "n "
          " ORDER BY step DESC LIMIT 1) FROM names WHERE n IS NOT NULL"));
  for (TrialRow& t : out) {
    latest.Reset();
    latest.Bind(1, t.id);
    MEGABATCH_RETURN_IF_ERROR(ForEachRow(latest, [&](Statement& r) {
      t.latest_metrics[r.Text(0)] = r.Double(1);
    }));
  }
  return out;
}

Result<int64_t> SweepStore::RegisterWorker(const std::string& name,
                                           int32_t slots, double now,
                                           const WorkerRendezvous& rendezvous,
                                           const std::string& owner) {
  Locked lock(this);
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement ins,
      db_->Prepare(
          "INSERT INTO workers (id, name, slots, state, registered_at, "
          "last_heartbeat_at, rendezvous_host, rendezvous_port_first, "
          "rendezvous_port_count, owner) VALUES (" +
          NextIdSql("workers") + ", ?, ?, 'alive', ?, ?, ?, ?, ?, ?)"));
  ins.Bind(1, name).Bind(2, slots).Bind(3, now).Bind(4, now);
  ins.Bind(5, rendezvous.host)
      .Bind(6, rendezvous.port_first)
      .Bind(7, rendezvous.port_count)
      .Bind(8, owner);
  MEGABATCH_RETURN_IF_ERROR(ins.Run());
  int64_t id = db_->LastInsertRowid();
  MEGABATCH_RETURN_IF_ERROR(AddEvent(
      0, 0, id, "worker_registered",
      "worker '" + name + "' with " + std::to_string(slots) + " slots" +
          (owner.empty() ? "" : ", registered by '" + owner + "'"),
      now));
  MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  Changed(Change::kView);
  return id;
}

Result<int64_t> SweepStore::PendingTrials(const std::string& owner) {
  Locked lock(this);
  MEGABATCH_ASSIGN_OR_RETURN(
      CachedStatement q,
      db_->Cached(
          "SELECT count(*) FROM trials t JOIN sweeps s ON s.id = t.sweep_id "
          "WHERE coalesce(s.owner, '') = ? AND t.state IN ('queued', "
          "'running')"));
  q->Bind(1, owner);
  MEGABATCH_ASSIGN_OR_RETURN(bool row, q->Step());
  return row ? q->Int(0) : 0;
}

Result<std::string> SweepStore::WorkerOwner(int64_t worker_id) {
  Locked lock(this);
  MEGABATCH_ASSIGN_OR_RETURN(
      CachedStatement q, db_->Cached("SELECT owner FROM workers WHERE id = ?"));
  q->Bind(1, worker_id);
  MEGABATCH_ASSIGN_OR_RETURN(bool row, q->Step());
  if (!row) {
    return NotFoundError("worker " + std::to_string(worker_id) +
                         " not found; register again");
  }
  return q->Text(0);
}

Status SweepStore::Audit(const std::string& caller, const std::string& role,
                         const std::string& action, const std::string& object,
                         const std::string& status, const std::string& detail,
                         double now) {
  constexpr size_t kMaxAuditText = 1000;
  auto cut = [](const std::string& text) {
    return text.size() <= kMaxAuditText ? text : text.substr(0, kMaxAuditText);
  };
  return RunGrouped([&]() -> Status {
    mu_.AssertHeld();  // CommitGroup runs it
    MEGABATCH_ASSIGN_OR_RETURN(
        CachedStatement ins, db_->Cached("INSERT INTO audit (at, caller, role, "
                                         "action, object, status, detail) "
                                         "VALUES (?, ?, ?, ?, ?, ?, ?)"));
    ins->Bind(1, now).Bind(2, cut(caller)).Bind(3, role).Bind(4, action);
    ins->Bind(5, cut(object)).Bind(6, status).Bind(7, cut(detail));
    return ins->Run();
  });
}

Result<std::vector<int64_t>> SweepStore::Heartbeat(
    int64_t worker_id, const std::vector<RunningLease>& running, double now) {
  std::vector<int64_t> stop;
  MEGABATCH_RETURN_IF_ERROR(RunGrouped([&]() -> Status {
    mu_.AssertHeld();  // CommitGroup runs it
    MEGABATCH_ASSIGN_OR_RETURN(
        CachedStatement up,
        db_->Cached("UPDATE workers SET last_heartbeat_at = ?, state = 'alive' "
                    "WHERE id = ?"));
    up->Bind(1, now).Bind(2, worker_id);
    MEGABATCH_RETURN_IF_ERROR(up->Run());
    if (db_->Changes() == 0) {
      return NotFoundError("worker " + std::to_string(worker_id) +
                           " not found; register again");
    }
    for (const RunningLease& r : running) {
      Status current = CheckLease(r.trial_id, r.lease_id, worker_id, r.rank);
      if (current.code() == StatusCode::kAborted ||
          current.code() == StatusCode::kNotFound) {
        stop.push_back(r.trial_id);
      } else {
        MEGABATCH_RETURN_IF_ERROR(current);
      }
    }
    return Status();
  }));
  return stop;
}

Result<std::vector<WorkerRow>> SweepStore::ListWorkers(int64_t after_id,
                                                       int64_t limit) {
  Locked lock(this);
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement q,
      db_->Prepare(
          "SELECT w.id, w.name, w.slots, w.state, w.last_heartbeat_at, " +
          HeldSlotsSql() +
          " FROM workers w WHERE w.id > ? ORDER BY w.id LIMIT ?"));
  q.Bind(1, after_id).Bind(2, limit);
  std::vector<WorkerRow> out;
  MEGABATCH_RETURN_IF_ERROR(ForEachRow(q, [&](Statement& r) {
    WorkerRow w;
    w.id = r.Int(0);
    w.name = r.Text(1);
    w.slots = static_cast<int32_t>(r.Int(2));
    w.alive = r.Text(3) == "alive";
    w.last_heartbeat_at = r.Double(4);
    w.busy_slots = static_cast<int32_t>(r.Int(5));
    out.push_back(std::move(w));
  }));
  return out;
}

Status SweepStore::CheckLease(int64_t trial_id, int64_t lease_id,
                              int64_t worker_id, int32_t rank) {
  MEGABATCH_ASSIGN_OR_RETURN(
      CachedStatement q,
      db_->Cached(
          "SELECT t.state, t.lease_id, coalesce(t.worker_id, 0), t.ranks, "
          "(SELECT r.worker_id FROM trial_ranks r WHERE r.trial_id = t.id AND "
          "r.rank = ?2 "
          " AND r.lease_id = t.lease_id) FROM trials t WHERE t.id = ?1"));
  q->Bind(1, trial_id).Bind(2, static_cast<int64_t>(rank));
  MEGABATCH_ASSIGN_OR_RETURN(bool row, q->Step());
  if (!row)
    return NotFoundError("trial " + std::to_string(trial_id) + " not found");
  const std::string state = q->Text(0);
  const int64_t holder = rank == 0 ? q->Int(2) : q->Int(4);
  const bool current = state == "running" && q->Int(1) == lease_id &&
                       holder == worker_id && rank >= 0 && rank < q->Int(3);
  if (!current) {
    return AbortedError("trial " + std::to_string(trial_id) + " lease " +
                        std::to_string(lease_id) +
                        (rank > 0 ? " rank " + std::to_string(rank) : "") +
                        " of worker " + std::to_string(worker_id) +
                        " is no longer current (trial is " + state + ")");
  }
  return Status();
}

Status SweepStore::ReleaseLease(int64_t trial_id, int64_t lease_id,
                                int64_t worker_id, double now, int32_t rank,
                                Release why, const std::string& message) {
  Locked lock(this);
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  Status current = CheckLease(trial_id, lease_id, worker_id, rank);
  if (current.code() == StatusCode::kAborted) return Status();
  MEGABATCH_RETURN_IF_ERROR(current);
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement up,
      db_->Prepare("UPDATE trials SET state = 'queued', worker_id = NULL, "
                   "attempts = attempts - 1 WHERE id = ? RETURNING sweep_id"));
  up.Bind(1, trial_id);
  MEGABATCH_RETURN_IF_ERROR(up.Step().status());
  int64_t sweep_id = up.Int(0);
  MEGABATCH_RETURN_IF_ERROR(up.Run());
  const bool preempted = why == Release::kPreempted;
  MEGABATCH_RETURN_IF_ERROR(AddEvent(
      sweep_id, trial_id, worker_id,
      preempted ? "trial_preempted" : "trial_released",
      "lease " + std::to_string(lease_id) +
          (preempted ? " given back by its worker: " + message
                     : " taken back: the worker went away before receiving it"),
      now));
  MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  Changed(Change::kWork);
  return Status();
}

Status SweepStore::AppendMetrics(int64_t trial_id, int64_t lease_id,
                                 int64_t worker_id,
                                 const std::vector<MetricPoint>& points,
                                 double now) {
  return RunGrouped([&]() -> Status {
    mu_.AssertHeld();  // CommitGroup runs it
    MEGABATCH_RETURN_IF_ERROR(CheckLease(trial_id, lease_id, worker_id));
    MEGABATCH_ASSIGN_OR_RETURN(
        CachedStatement cached,
        db_->Cached(
            "INSERT INTO metrics (trial_id, name, step, value, recorded_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (trial_id, name, step) "
            "DO UPDATE SET value = excluded.value, recorded_at = "
            "excluded.recorded_at"));
    Statement& ins = *cached;
    for (const MetricPoint& p : points) {
      ins.Reset();
      ins.Bind(1, trial_id).Bind(2, p.name).Bind(3, p.step);
      if (std::isfinite(p.value)) {
        ins.Bind(4, p.value);
      } else {
        ins.BindNull(4);  // SQLite has no NaN; a diverged loss is stored NULL
      }
      ins.Bind(5, now);
      MEGABATCH_RETURN_IF_ERROR(ins.Run());
    }
    return ApplyEarlyStopping(trial_id, points, now);
  });
}

Status SweepStore::RunGrouped(std::function<Status()> body) {
  GroupedWrite self;
  self.body = std::move(body);
  MutexLock lock(&group_mu_);
  group_queue_.push_back(&self);
  while (!self.done) {
    if (group_leading_) {
      group_cv_.Wait();
      continue;
    }
    // Lead: commit everything queued so far (this write among it).
    group_leading_ = true;
    std::vector<GroupedWrite*> group;
    group.swap(group_queue_);
    lock.Unlock();
    CommitGroup(group);
    lock.Lock();
    for (GroupedWrite* w : group) w->done = true;
    group_leading_ = false;
    group_cv_.SignalAll();
  }
  return self.result;
}

void SweepStore::CommitGroup(const std::vector<GroupedWrite*>& group) {
  Locked lock(this);
  const int64_t version = version_;
  const std::optional<Change> before = pending_;
  Transaction tx(db_.get());
  if (!tx.begin_status().ok()) {
    for (GroupedWrite* w : group) w->result = tx.begin_status();
    return;
  }
  Status committed;
  for (GroupedWrite* w : group) {
    // A change counts only if its write is kept.
    const int64_t write_version = version_;
    const std::optional<Change> write_pending = pending_;
    w->result = db_->Exec("SAVEPOINT grouped");
    if (w->result.ok()) w->result = w->body();
    if (w->result.ok()) w->result = db_->Exec("RELEASE grouped");
    if (w->result.ok()) continue;
    if (!db_->InTransaction()) {
      // SQLite undid the whole transaction (it may on a full disk): every
      // write of the group fails as this one did.
      committed = w->result;
      break;
    }
    (void)db_->Exec("ROLLBACK TO grouped; RELEASE grouped");
    version_ = write_version;
    pending_ = write_pending;
  }
  if (committed.ok()) committed = tx.Commit();
  if (!committed.ok()) {
    version_ = version;
    pending_ = before;
    for (GroupedWrite* w : group) {
      if (w->result.ok()) w->result = committed;
    }
  }
}

Status SweepStore::ApplyEarlyStopping(int64_t trial_id,
                                      const std::vector<MetricPoint>& points,
                                      double now) {
  // Only evaluations decide; most reports carry none, and skip the lookups.
  const bool evaluated =
      std::any_of(points.begin(), points.end(), [](const MetricPoint& p) {
        return FindSelectionMetric(p.name) != nullptr;
      });
  if (!evaluated) return Status();
  MEGABATCH_ASSIGN_OR_RETURN(
      CachedStatement trial,
      db_->Cached("SELECT sweep_id, batch_size FROM trials WHERE id = ?"));
  trial->Bind(1, trial_id);
  MEGABATCH_ASSIGN_OR_RETURN(bool found, trial->Step());
  if (!found)
    return NotFoundError("trial " + std::to_string(trial_id) + " not found");
  const int64_t sweep_id = trial->Int(0), batch = trial->Int(1);

  auto cached = early_stopping_.find(sweep_id);
  if (cached == early_stopping_.end()) {
    // The sweep's rule, read from its stored spec once.
    MEGABATCH_ASSIGN_OR_RETURN(spec::SweepSpec spec,
                               StoredSpecLocked(sweep_id));
    cached =
        early_stopping_.emplace(sweep_id, planner::EarlyStoppingOf(spec)).first;
  }
  if (!cached->second) return Status();
  const planner::EarlyStoppingRule& rule = *cached->second;

  for (const MetricPoint& p : points) {
    if (p.name != rule.metric) continue;
    const int64_t samples = p.step * batch;
    const double value = planner::RankedValue(rule, p.value);
    const int rungs = planner::RungsReached(rule, samples);
    for (int rung = 0; rung < rungs; ++rung) {
      MEGABATCH_ASSIGN_OR_RETURN(
          CachedStatement add,
          db_->Cached(
              "INSERT OR IGNORE INTO rungs (sweep_id, rung, trial_id, samples, "
              "value) "
              "VALUES (?, ?, ?, ?, ?)"));
      (add)
          ->Bind(1, sweep_id)
          .Bind(2, rung)
          .Bind(3, trial_id)
          .Bind(4, samples)
          .Bind(5, value);
      MEGABATCH_RETURN_IF_ERROR(add->Run());
      if (db_->Changes() == 0) continue;  // this rung was decided before
      MEGABATCH_ASSIGN_OR_RETURN(
          CachedStatement rank,
          db_->Cached("SELECT count(*), sum(CASE WHEN ?3 THEN value < ?4 ELSE "
                      "value > ?4 "
                      "END) "
                      "FROM rungs WHERE sweep_id = ?1 AND rung = ?2"));
      (rank)
          ->Bind(1, sweep_id)
          .Bind(2, rung)
          .Bind(3, int64_t{rule.lower_is_better});
      rank->Bind(4, value);
      MEGABATCH_RETURN_IF_ERROR(rank->Step().status());
      const int64_t recorded = rank->Int(0);
      const planner::RungVerdict verdict =
          planner::DecideRung(rule, recorded, rank->Int(1));
      if (!verdict.prune) continue;
      MEGABATCH_ASSIGN_OR_RETURN(
          CachedStatement prune,
          db_->Cached("UPDATE trials SET state = 'pruned', finished_at = ? "
                      "WHERE id = ?"));
      prune->Bind(1, now).Bind(2, trial_id);
      MEGABATCH_RETURN_IF_ERROR(prune->Run());
      MEGABATCH_RETURN_IF_ERROR(
          AddEvent(sweep_id, trial_id, 0, "trial_pruned",
                   planner::PruneMessage(rule, rung, samples, p.value, verdict,
                                         recorded),
                   now));
      // A pruned trial may be the last of its cell: lr_edges may extend it.
      MEGABATCH_RETURN_IF_ERROR(PlanLocked(sweep_id, now));
      MEGABATCH_RETURN_IF_ERROR(RefreshSweepState(sweep_id, now));
      Changed(Change::kWork);
      return Status();
    }
  }
  return Status();
}

Result<TrialState> SweepStore::FinishTrial(
    int64_t trial_id, int64_t lease_id, int64_t worker_id, TrialState outcome,
    const std::string& message, const std::string& stderr_tail, double now,
    int32_t rank, bool retry) {
  if (outcome != TrialState::kCompleted && outcome != TrialState::kFailed &&
      outcome != TrialState::kDiverged) {
    return InvalidArgumentError(
        std::string("outcome: must be completed, failed or diverged, got ") +
        TrialStateName(outcome));
  }
  Locked lock(this);
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  if (rank > 0 && outcome != TrialState::kFailed) {
    // Rank 0 reports how the trial ended; another rank's exit says nothing
    // new (and may come after rank 0's report).
    MEGABATCH_ASSIGN_OR_RETURN(
        Statement state, db_->Prepare("SELECT state FROM trials WHERE id = ?"));
    state.Bind(1, trial_id);
    MEGABATCH_ASSIGN_OR_RETURN(bool row, state.Step());
    if (!row)
      return NotFoundError("trial " + std::to_string(trial_id) + " not found");
    return ParseTrialState(state.Text(0)).value_or(TrialState::kQueued);
  }
  MEGABATCH_RETURN_IF_ERROR(CheckLease(trial_id, lease_id, worker_id, rank));
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement q,
      db_->Prepare("SELECT t.sweep_id, t.attempts, s.max_retries FROM trials t "
                   "JOIN sweeps s ON s.id = t.sweep_id WHERE t.id = ?"));
  q.Bind(1, trial_id);
  MEGABATCH_RETURN_IF_ERROR(q.Step().status());
  int64_t sweep_id = q.Int(0);
  int64_t attempts = q.Int(1);
  int64_t max_retries = q.Int(2);

  TrialState next = outcome;
  if (outcome == TrialState::kFailed && retry && attempts <= max_retries) {
    next = TrialState::kQueued;
  }
  std::string tail =
      stderr_tail.size() > kMaxStoredStderr
          ? stderr_tail.substr(stderr_tail.size() - kMaxStoredStderr)
          : stderr_tail;
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement up,
      db_->Prepare(
          "UPDATE trials SET state = ?, worker_id = CASE WHEN ? THEN NULL ELSE "
          "worker_id END, error = nullif(?, ''), finished_at = ? WHERE id = "
          "?"));
  up.Bind(1, TrialStateName(next))
      .Bind(2, int64_t{next == TrialState::kQueued});
  up.Bind(3, outcome == TrialState::kCompleted ? std::string() : message);
  if (IsFinal(next)) {
    up.Bind(4, now);
  } else {
    up.BindNull(4);
  }
  up.Bind(5, trial_id);
  MEGABATCH_RETURN_IF_ERROR(up.Run());
  std::string event = std::string("attempt ") + std::to_string(attempts) + " " +
                      TrialStateName(outcome);
  if (!message.empty()) event += ": " + message;
  if (next == TrialState::kQueued) event += "; requeued for a retry";
  if (outcome == TrialState::kFailed && !retry) {
    event +=
        "; not retried (the input is wrong: a retry would fail the same "
        "way)";
  }
  if (!tail.empty()) event += "\n--- trainer stderr (tail) ---\n" + tail;
  MEGABATCH_RETURN_IF_ERROR(
      AddEvent(sweep_id, trial_id, worker_id,
               std::string("trial_") + TrialStateName(outcome), event, now));
  // An adaptive study plans its next trials from this result, in the same
  // transaction: the plan always matches the results stored.
  MEGABATCH_RETURN_IF_ERROR(PlanLocked(sweep_id, now));
  MEGABATCH_RETURN_IF_ERROR(RefreshSweepState(sweep_id, now));
  MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  Changed(Change::kWork);
  return next;
}

Result<int> SweepStore::ExpireWorkers(double deadline, double now) {
  Locked lock(this);
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement lost, db_->Prepare("SELECT id FROM workers WHERE state = "
                                   "'alive' AND last_heartbeat_at < ?"));
  lost.Bind(1, deadline);
  std::vector<int64_t> ids;
  MEGABATCH_RETURN_IF_ERROR(
      ForEachRow(lost, [&](Statement& r) { ids.push_back(r.Int(0)); }));
  int requeued = 0;
  std::set<int64_t> sweeps;
  for (int64_t id : ids) {
    MEGABATCH_ASSIGN_OR_RETURN(
        Statement trials,
        db_->Prepare(
            "SELECT DISTINCT h.trial_id, t.sweep_id FROM holdings h "
            "JOIN trials t ON t.id = h.trial_id WHERE h.worker_id = ?"));
    trials.Bind(1, id);
    std::vector<std::pair<int64_t, int64_t>> held;
    MEGABATCH_RETURN_IF_ERROR(ForEachRow(
        trials, [&](Statement& r) { held.emplace_back(r.Int(0), r.Int(1)); }));
    for (const auto& [trial_id, sweep_id] : held) {
      MEGABATCH_RETURN_IF_ERROR(AddEvent(sweep_id, trial_id, id,
                                         "trial_requeued",
                                         "worker lost; lease revoked", now));
      sweeps.insert(sweep_id);
    }
    MEGABATCH_ASSIGN_OR_RETURN(
        Statement requeue,
        db_->Prepare("UPDATE trials SET state = 'queued', worker_id = NULL "
                     "WHERE id = ? AND state = 'running'"));
    for (const auto& held_trial : held) {
      requeue.Reset();
      requeue.Bind(1, held_trial.first);
      MEGABATCH_RETURN_IF_ERROR(requeue.Run());
      requeued += db_->Changes();
    }
    MEGABATCH_ASSIGN_OR_RETURN(
        Statement mark,
        db_->Prepare("UPDATE workers SET state = 'lost' WHERE id = ?"));
    mark.Bind(1, id);
    MEGABATCH_RETURN_IF_ERROR(mark.Run());
    MEGABATCH_RETURN_IF_ERROR(
        AddEvent(0, 0, id, "worker_lost", "no heartbeat", now));
  }
  for (int64_t sweep_id : sweeps) {
    MEGABATCH_RETURN_IF_ERROR(RefreshSweepState(sweep_id, now));
  }
  MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  if (!ids.empty()) Changed(Change::kWork);
  return requeued;
}

Result<int> SweepStore::FenceAfterRestore(int64_t id_gap, double now) {
  if (id_gap < 1) return InvalidArgumentError("id gap: must be >= 1");
  Locked lock(this);
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement running,
      db_->Prepare("SELECT id, sweep_id, coalesce(worker_id, 0) FROM trials "
                   "WHERE state = 'running'"));
  struct Held {
    int64_t trial, sweep, worker;
  };
  std::vector<Held> held;
  MEGABATCH_RETURN_IF_ERROR(ForEachRow(running, [&](Statement& r) {
    held.push_back({r.Int(0), r.Int(1), r.Int(2)});
  }));
  std::set<int64_t> sweeps;
  for (const Held& h : held) {
    MEGABATCH_RETURN_IF_ERROR(AddEvent(
        h.sweep, h.trial, h.worker, "trial_requeued",
        "database restored from a backup: the lease is void; the retry "
        "resumes from a checkpoint at or before the last stored step",
        now));
    sweeps.insert(h.sweep);
  }
  std::string gap = std::to_string(id_gap);
  MEGABATCH_RETURN_IF_ERROR(
      db_->Exec("UPDATE trials SET state = 'queued', worker_id = NULL, "
                "rendezvous_port = NULL WHERE state = 'running'; "
                "UPDATE trials SET lease_id = lease_id + " +
                gap +
                "; "
                "UPDATE workers SET state = 'lost' WHERE state = 'alive'; "
                "INSERT OR REPLACE INTO id_floors (name, next) "
                "SELECT 'sweeps', coalesce(max(id), 0) + 1 + " +
                gap +
                " FROM sweeps UNION ALL "
                "SELECT 'trials', coalesce(max(id), 0) + 1 + " +
                gap +
                " FROM trials UNION ALL "
                "SELECT 'workers', coalesce(max(id), 0) + 1 + " +
                gap + " FROM workers;"));
  for (int64_t sweep_id : sweeps) {
    MEGABATCH_RETURN_IF_ERROR(RefreshSweepState(sweep_id, now));
  }
  MEGABATCH_RETURN_IF_ERROR(AddEvent(
      0, 0, 0, "database_restored",
      "restored from a backup: " + std::to_string(held.size()) +
          " running trials requeued; lease and new ids moved up by " + gap,
      now));
  MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  Changed(Change::kWork);
  return static_cast<int>(held.size());
}

}  // namespace megabatch::store
