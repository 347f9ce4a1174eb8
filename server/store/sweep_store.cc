#include "server/store/sweep_store.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>
#include <set>
#include <sstream>

#include "common/selection_metrics.h"
#include "server/planner/adaptive.h"
#include "server/store/schema.h"

namespace megabatch::store {
namespace {

// The slots the worker `w` holds: trials it runs as rank 0, and other ranks
// of running trials under their current lease. The `holdings` view says the
// same, but SQLite does not push a worker filter into its UNION ALL, so the
// per-worker counts use this.
const std::string& HeldSlotsOfW() {
  static const std::string sql =
      "((SELECT count(*) FROM trials t WHERE t.worker_id = w.id AND t.state = 'running') + "
      "(SELECT count(*) FROM trial_ranks r JOIN trials t ON t.id = r.trial_id "
      "AND t.lease_id = r.lease_id AND t.state = 'running' WHERE r.worker_id = w.id))";
  return sql;
}

constexpr int kNumMigrations = std::size(kMigrations);
static_assert(kNumMigrations == kSchemaVersion);
constexpr size_t kMaxStoredStderr = 8192;

constexpr std::pair<TrialState, const char*> kTrialStateNames[] = {
    {TrialState::kQueued, "queued"},       {TrialState::kRunning, "running"},
    {TrialState::kCompleted, "completed"}, {TrialState::kFailed, "failed"},
    {TrialState::kCancelled, "cancelled"}, {TrialState::kDiverged, "diverged"},
    {TrialState::kPruned, "pruned"},
};
constexpr std::pair<SweepState, const char*> kSweepStateNames[] = {
    {SweepState::kQueued, "queued"},       {SweepState::kRunning, "running"},
    {SweepState::kCompleted, "completed"}, {SweepState::kFailed, "failed"},
    {SweepState::kCancelled, "cancelled"},
};

}  // namespace

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

Result<std::unique_ptr<SweepStore>> SweepStore::Open(const std::string& path) {
  Result<std::unique_ptr<Db>> db = Db::Open(path);
  if (!db.ok()) return db.status();
  std::unique_ptr<SweepStore> store(new SweepStore(std::move(*db)));
  std::lock_guard<std::mutex> lock(store->mu_);
  MEGABATCH_RETURN_IF_ERROR(store->Migrate());
  return store;
}

Status SweepStore::Migrate() {
  Result<Statement> q = db_->Prepare("PRAGMA user_version");
  if (!q.ok()) return q.status();
  Result<bool> row = q->Step();
  if (!row.ok()) return row.status();
  int version = static_cast<int>(q->Int(0));
  if (version > kSchemaVersion) {
    return DataLossError("database schema version " + std::to_string(version) +
                         " is newer than this coordinator's " +
                         std::to_string(kSchemaVersion));
  }
  if (version == 0) {
    // A fresh file has no tables; anything else is not ours to migrate.
    Result<Statement> tables =
        db_->Prepare("SELECT count(*) FROM sqlite_master WHERE type='table'");
    if (!tables.ok()) return tables.status();
    Result<bool> r = tables->Step();
    if (!r.ok()) return r.status();
    if (tables->Int(0) != 0) {
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
  Result<Statement> st = db_->Prepare(
      "INSERT INTO events (at, sweep_id, trial_id, worker_id, kind, message) "
      "VALUES (?, nullif(?, 0), nullif(?, 0), nullif(?, 0), ?, ?)");
  if (!st.ok()) return st.status();
  st->Bind(1, now).Bind(2, sweep_id).Bind(3, trial_id).Bind(4, worker_id);
  st->Bind(5, kind).Bind(6, message);
  return st->Run();
}

Result<int64_t> SweepStore::CreateSweep(
    const spec::SweepSpec& spec, const std::vector<spec::TrialSpec>& trials,
    const std::string& request_id, double now, bool* existed,
    const std::string& owner) {
  std::lock_guard<std::mutex> lock(mu_);
  *existed = false;
  const std::string spec_json = spec.ToJson().dump();
  if (!request_id.empty()) {
    Result<Statement> q = db_->Prepare(
        "SELECT s.id, s.name, s.spec_json FROM sweep_requests r JOIN sweeps s "
        "ON s.id = r.sweep_id WHERE r.owner = ? AND r.request_id = ?");
    if (!q.ok()) return q.status();
    q->Bind(1, owner).Bind(2, request_id);
    Result<bool> row = q->Step();
    if (!row.ok()) return row.status();
    if (*row) {
      if (q->Text(2) != spec_json) {
        return AlreadyExistsError("request_id '" + request_id + "' was used for sweep " +
                                  std::to_string(q->Int(0)) + " ('" + q->Text(1) +
                                  "') with a different spec; use a new request id");
      }
      *existed = true;
      return q->Int(0);
    }
  }
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  Result<Statement> ins = db_->Prepare(
      "INSERT INTO sweeps (name, state, spec_json, priority, "
      "max_parallel, max_retries, created_at, owner) "
      "VALUES (?, 'queued', ?, ?, ?, ?, ?, nullif(?, ''))");
  if (!ins.ok()) return ins.status();
  ins->Bind(1, spec.name).Bind(2, spec_json);
  ins->Bind(3, spec.priority).Bind(4, spec.max_parallel);
  ins->Bind(5, spec.max_retries).Bind(6, now).Bind(7, owner);
  MEGABATCH_RETURN_IF_ERROR(ins->Run());
  int64_t sweep_id = db_->LastInsertRowid();
  if (!request_id.empty()) {
    Result<Statement> remember = db_->Prepare(
        "INSERT INTO sweep_requests (owner, request_id, sweep_id) VALUES (?, ?, ?)");
    if (!remember.ok()) return remember.status();
    remember->Bind(1, owner).Bind(2, request_id).Bind(3, sweep_id);
    MEGABATCH_RETURN_IF_ERROR(remember->Run());
  }

  MEGABATCH_RETURN_IF_ERROR(
      InsertTrialsLocked(sweep_id, trials, std::vector<std::string>(trials.size())));
  MEGABATCH_RETURN_IF_ERROR(AddEvent(
      sweep_id, 0, 0, "sweep_submitted",
      "sweep '" + spec.name + "' with " +
          (spec.strategy.is_null() ? std::to_string(trials.size()) + " trials"
                                   : std::string("an adaptive plan")),
      now));
  MEGABATCH_RETURN_IF_ERROR(PlanLocked(sweep_id, now));
  MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  ++version_;
  return sweep_id;
}

Status SweepStore::InsertTrialsLocked(int64_t sweep_id,
                                      const std::vector<spec::TrialSpec>& trials,
                                      const std::vector<std::string>& phases) {
  Result<Statement> trial = db_->Prepare(
      "INSERT INTO trials (sweep_id, trial_index, optimizer, batch_size, lr, "
      "lr_multiplier, seed, state, config_json, ranks, phase) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, nullif(?, ''))");
  if (!trial.ok()) return trial.status();
  Result<Statement> set_config =
      db_->Prepare("UPDATE trials SET config_json = ? WHERE id = ?");
  if (!set_config.ok()) return set_config.status();
  for (size_t i = 0; i < trials.size(); ++i) {
    const spec::TrialSpec& t = trials[i];
    trial->Reset();
    trial->Bind(1, sweep_id).Bind(2, t.index).Bind(3, t.optimizer);
    trial->Bind(4, t.batch_size).Bind(5, t.lr).Bind(6, t.lr_multiplier);
    trial->Bind(7, t.seed).Bind(8, t.config.dump()).Bind(9, t.ranks).Bind(10, phases[i]);
    MEGABATCH_RETURN_IF_ERROR(trial->Run());
    int64_t trial_id = db_->LastInsertRowid();
    nlohmann::json config = t.config;
    config["trial_id"] = trial_id;
    config["sweep_id"] = sweep_id;
    set_config->Reset();
    set_config->Bind(1, config.dump()).Bind(2, trial_id);
    MEGABATCH_RETURN_IF_ERROR(set_config->Run());
  }
  return Status();
}

Status SweepStore::PlanLocked(int64_t sweep_id, double now) {
  // Runs at every trial's end: a grid sweep (no strategy) costs one cached
  // probe, not a parse of its spec.
  Result<Statement*> sweep = db_->Cached(
      "SELECT spec_json, state FROM sweeps WHERE id = ? "
      "AND json_extract(spec_json, '$.strategy') IS NOT NULL");
  if (!sweep.ok()) return sweep.status();
  (*sweep)->Bind(1, sweep_id);
  Result<bool> found = (*sweep)->Step();
  if (!found.ok()) return found.status();
  const std::string spec_json = *found ? (*sweep)->Text(0) : std::string();
  const auto state = *found ? ParseSweepState((*sweep)->Text(1)) : std::nullopt;
  (*sweep)->Reset();
  if (!*found || (state && IsFinal(*state))) return Status();
  const nlohmann::json doc = nlohmann::json::parse(spec_json, nullptr, false);
  Result<spec::SweepSpec> spec = spec::SweepSpecFromJson(doc);
  if (!spec.ok()) {
    return DataLossError("sweep " + std::to_string(sweep_id) +
                         ": stored spec no longer parses: " + spec.status().message());
  }
  Result<Statement> q = db_->Prepare(
      "SELECT t.phase, t.optimizer, t.batch_size, t.lr, t.seed, t.state, "
      "s.samples_to_target, s.best_target_value, "
      "COALESCE(s.noise_scale_at_100pct, s.gradient_noise_scale), t.trial_index "
      "FROM trials t JOIN trial_summary s ON s.trial_id = t.id "
      "WHERE t.sweep_id = ? ORDER BY t.trial_index");
  if (!q.ok()) return q.status();
  q->Bind(1, sweep_id);
  std::vector<planner::PlannedTrial> trials;
  int32_t next_index = 0;
  MEGABATCH_RETURN_IF_ERROR(ForEachRow(*q, [&](Statement& r) {
    planner::PlannedTrial t;
    t.phase = r.Text(0);
    t.optimizer = r.Text(1);
    t.batch_size = r.Int(2);
    t.lr = r.Double(3);
    t.seed = r.Int(4);
    const TrialState st = ParseTrialState(r.Text(5)).value_or(TrialState::kQueued);
    t.ended = st != TrialState::kQueued && st != TrialState::kRunning;
    t.diverged = st == TrialState::kDiverged;
    t.completed = st == TrialState::kCompleted;
    t.samples_to_target = r.OptionalDouble(6);
    t.best_target_value = r.OptionalDouble(7);
    t.noise_scale = r.OptionalDouble(8);
    next_index = static_cast<int32_t>(r.Int(9)) + 1;
    trials.push_back(std::move(t));
  }));
  planner::PlanStep step = planner::PlanAdaptive(*spec, trials, next_index);
  MEGABATCH_RETURN_IF_ERROR(InsertTrialsLocked(sweep_id, step.trials, step.phases));
  for (const std::string& decision : step.decisions) {
    MEGABATCH_RETURN_IF_ERROR(AddEvent(sweep_id, 0, 0, "plan", decision, now));
  }
  return Status();
}

Result<SweepRow> SweepStore::GetSweepLocked(int64_t sweep_id) {
  Result<Statement> q = db_->Prepare(
      "SELECT id, name, state, priority, max_parallel, max_retries, "
      "created_at, coalesce(finished_at, 0), coalesce(owner, '') FROM sweeps "
      "WHERE id = ?");
  if (!q.ok()) return q.status();
  q->Bind(1, sweep_id);
  Result<bool> row = q->Step();
  if (!row.ok()) return row.status();
  if (!*row) return NotFoundError("sweep " + std::to_string(sweep_id) + " not found");
  SweepRow s;
  s.id = q->Int(0);
  s.name = q->Text(1);
  s.state = ParseSweepState(q->Text(2)).value_or(SweepState::kQueued);
  s.priority = static_cast<int32_t>(q->Int(3));
  s.max_parallel = static_cast<int32_t>(q->Int(4));
  s.max_retries = static_cast<int32_t>(q->Int(5));
  s.created_at = q->Double(6);
  s.finished_at = q->Double(7);
  s.owner = q->Text(8);
  Result<Statement> counts = db_->Prepare(
      "SELECT state, count(*) FROM trials WHERE sweep_id = ? GROUP BY state");
  if (!counts.ok()) return counts.status();
  counts->Bind(1, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(ForEachRow(*counts, [&](Statement& c) {
    if (auto st = ParseTrialState(c.Text(0))) {
      s.trial_counts[*st] = static_cast<int32_t>(c.Int(1));
      s.trials_total += static_cast<int32_t>(c.Int(1));
    }
  }));
  Result<Statement*> phase = db_->Cached(R"sql(
    SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM trials WHERE sweep_id = ?1 AND phase IS NOT NULL)
      THEN '' ELSE COALESCE((SELECT phase FROM trials WHERE sweep_id = ?1 AND phase IS NOT NULL
        AND state IN ('queued', 'running')
        ORDER BY CASE phase WHEN 'probe' THEN 0 WHEN 'search' THEN 1 ELSE 2 END LIMIT 1),
      'done') END)sql");
  if (!phase.ok()) return phase.status();
  (*phase)->Bind(1, sweep_id);
  Result<bool> phase_row = (*phase)->Step();
  if (!phase_row.ok()) return phase_row.status();
  s.phase = (*phase)->Text(0);
  (*phase)->Reset();
  return s;
}

Result<SweepRow> SweepStore::GetSweep(int64_t sweep_id) {
  std::lock_guard<std::mutex> lock(mu_);
  return GetSweepLocked(sweep_id);
}

Result<std::vector<SweepRow>> SweepStore::ListSweeps(int64_t after_id, int64_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  Result<Statement> q = db_->Prepare("SELECT id FROM sweeps WHERE id > ? ORDER BY id LIMIT ?");
  if (!q.ok()) return q.status();
  q->Bind(1, after_id).Bind(2, limit);
  std::vector<int64_t> ids;
  MEGABATCH_RETURN_IF_ERROR(
      ForEachRow(*q, [&](Statement& s) { ids.push_back(s.Int(0)); }));
  std::vector<SweepRow> out;
  for (int64_t id : ids) {
    Result<SweepRow> s = GetSweepLocked(id);
    if (!s.ok()) return s.status();
    out.push_back(std::move(*s));
  }
  return out;
}

Status SweepStore::RefreshSweepState(int64_t sweep_id, double now) {
  // Index probes on trials (sweep_id, state), not a count of every trial:
  // this runs on every finished attempt.
  Result<Statement*> probe = db_->Cached(R"sql(
    SELECT state,
      EXISTS (SELECT 1 FROM trials WHERE sweep_id = ?1 AND state IN ('queued', 'running')),
      EXISTS (SELECT 1 FROM trials WHERE sweep_id = ?1 AND state IN
              ('running', 'completed', 'failed', 'cancelled', 'diverged', 'pruned')),
      EXISTS (SELECT 1 FROM trials WHERE sweep_id = ?1 AND state = 'failed')
    FROM sweeps WHERE id = ?1)sql");
  if (!probe.ok()) return probe.status();
  (*probe)->Bind(1, sweep_id);
  Result<bool> found = (*probe)->Step();
  if (!found.ok()) return found.status();
  if (!*found) return NotFoundError("sweep " + std::to_string(sweep_id) + " not found");
  const SweepState state = ParseSweepState((*probe)->Text(0)).value_or(SweepState::kQueued);
  const bool active = (*probe)->Int(1) != 0, ever_started = (*probe)->Int(2) != 0,
             any_failed = (*probe)->Int(3) != 0;
  (*probe)->Reset();
  if (IsFinal(state)) return Status();
  SweepState next = state;
  if (!active) {
    next = any_failed ? SweepState::kFailed : SweepState::kCompleted;
  } else if (ever_started) {
    next = SweepState::kRunning;
  }
  if (next == state) return Status();
  Result<Statement> up = db_->Prepare(
      "UPDATE sweeps SET state = ?, finished_at = ? WHERE id = ?");
  if (!up.ok()) return up.status();
  up->Bind(1, SweepStateName(next));
  if (IsFinal(next)) {
    up->Bind(2, now);
  } else {
    up->BindNull(2);
  }
  up->Bind(3, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(up->Run());
  if (IsFinal(next)) {
    MEGABATCH_RETURN_IF_ERROR(AddEvent(sweep_id, 0, 0, "sweep_finished",
                                       std::string("sweep ") +
                                           SweepStateName(next),
                                       now));
  }
  return Status();
}

Result<SweepRow> SweepStore::CancelSweep(int64_t sweep_id, double now) {
  std::lock_guard<std::mutex> lock(mu_);
  Result<SweepRow> s = GetSweepLocked(sweep_id);
  if (!s.ok()) return s.status();
  if (IsFinal(s->state)) {
    return FailedPreconditionError("sweep " + std::to_string(sweep_id) +
                                   " is " + SweepStateName(s->state) +
                                   "; cannot cancel");
  }
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  Result<Statement> up = db_->Prepare(
      "UPDATE trials SET state = 'cancelled', finished_at = ? "
      "WHERE sweep_id = ? AND state IN ('queued', 'running')");
  if (!up.ok()) return up.status();
  up->Bind(1, now).Bind(2, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(up->Run());
  Result<Statement> sw = db_->Prepare(
      "UPDATE sweeps SET state = 'cancelled', finished_at = ? WHERE id = ?");
  if (!sw.ok()) return sw.status();
  sw->Bind(1, now).Bind(2, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(sw->Run());
  MEGABATCH_RETURN_IF_ERROR(
      AddEvent(sweep_id, 0, 0, "sweep_cancelled", "cancelled by user", now));
  MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  ++version_;
  return GetSweepLocked(sweep_id);
}

Result<std::vector<TrialRow>> SweepStore::ListTrials(int64_t sweep_id, int64_t after_index,
                                                     int64_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  Result<SweepRow> s = GetSweepLocked(sweep_id);
  if (!s.ok()) return s.status();
  Result<Statement> q = db_->Prepare(
      "SELECT id, sweep_id, trial_index, optimizer, batch_size, lr, "
      "lr_multiplier, seed, state, coalesce(worker_id, 0), lease_id, attempts, "
      "coalesce(error, ''), coalesce(started_at, 0), coalesce(finished_at, 0), "
      "coalesce(phase, '') "
      "FROM trials WHERE sweep_id = ? AND trial_index > ? ORDER BY trial_index LIMIT ?");
  if (!q.ok()) return q.status();
  q->Bind(1, sweep_id).Bind(2, after_index).Bind(3, limit);
  std::vector<TrialRow> out;
  MEGABATCH_RETURN_IF_ERROR(ForEachRow(*q, [&](Statement& r) {
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
  // SQLite returns the bare column `value` from the row holding MAX(step).
  Result<Statement> latest = db_->Prepare(
      "SELECT name, value, max(step) FROM metrics WHERE trial_id = ? "
      "GROUP BY name");
  if (!latest.ok()) return latest.status();
  for (TrialRow& t : out) {
    latest->Reset();
    latest->Bind(1, t.id);
    MEGABATCH_RETURN_IF_ERROR(ForEachRow(*latest, [&](Statement& r) {
      t.latest_metrics[r.Text(0)] = r.Double(1);
    }));
  }
  return out;
}

Result<int64_t> SweepStore::RegisterWorker(const std::string& name, int32_t slots,
                                           double now, const WorkerRendezvous& rendezvous) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  Result<Statement> ins = db_->Prepare(
      "INSERT INTO workers (name, slots, state, registered_at, last_heartbeat_at, "
      "rendezvous_host, rendezvous_port_first, rendezvous_port_count) "
      "VALUES (?, ?, 'alive', ?, ?, ?, ?, ?)");
  if (!ins.ok()) return ins.status();
  ins->Bind(1, name).Bind(2, slots).Bind(3, now).Bind(4, now);
  ins->Bind(5, rendezvous.host).Bind(6, rendezvous.port_first).Bind(7, rendezvous.port_count);
  MEGABATCH_RETURN_IF_ERROR(ins->Run());
  int64_t id = db_->LastInsertRowid();
  MEGABATCH_RETURN_IF_ERROR(AddEvent(0, 0, id, "worker_registered",
                                     "worker '" + name + "' with " +
                                         std::to_string(slots) + " slots",
                                     now));
  MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  return id;
}

Result<std::vector<int64_t>> SweepStore::Heartbeat(int64_t worker_id,
                                                   const std::vector<RunningLease>& running,
                                                   double now) {
  std::lock_guard<std::mutex> lock(mu_);
  Result<Statement> up = db_->Prepare(
      "UPDATE workers SET last_heartbeat_at = ?, state = 'alive' WHERE id = ?");
  if (!up.ok()) return up.status();
  up->Bind(1, now).Bind(2, worker_id);
  MEGABATCH_RETURN_IF_ERROR(up->Run());
  if (db_->Changes() == 0) {
    return NotFoundError("worker " + std::to_string(worker_id) +
                         " not found; register again");
  }
  std::vector<int64_t> stop;
  for (const RunningLease& r : running) {
    Status current = CheckLease(r.trial_id, r.lease_id, worker_id, r.rank);
    if (current.code() == StatusCode::kAborted || current.code() == StatusCode::kNotFound) {
      stop.push_back(r.trial_id);
    } else {
      MEGABATCH_RETURN_IF_ERROR(current);
    }
  }
  return stop;
}

Result<std::vector<WorkerRow>> SweepStore::ListWorkers() {
  std::lock_guard<std::mutex> lock(mu_);
  Result<Statement> q = db_->Prepare(
      "SELECT w.id, w.name, w.slots, w.state, w.last_heartbeat_at, " + HeldSlotsOfW() +
      " FROM workers w ORDER BY w.id");
  if (!q.ok()) return q.status();
  std::vector<WorkerRow> out;
  MEGABATCH_RETURN_IF_ERROR(ForEachRow(*q, [&](Statement& r) {
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

Result<int64_t> SweepStore::CreateToken(const std::string& name,
                                        const std::string& role,
                                        const std::string& sha256_hex, double now) {
  std::lock_guard<std::mutex> lock(mu_);
  Result<Statement> ins = db_->Prepare(
      "INSERT INTO tokens (name, role, sha256, created_at) VALUES (?, ?, ?, ?)");
  if (!ins.ok()) return ins.status();
  ins->Bind(1, name).Bind(2, role).Bind(3, sha256_hex).Bind(4, now);
  MEGABATCH_RETURN_IF_ERROR(ins->Run());
  return db_->LastInsertRowid();
}

Result<std::vector<TokenRow>> SweepStore::ListTokens() {
  std::lock_guard<std::mutex> lock(mu_);
  Result<Statement> q = db_->Prepare(
      "SELECT id, name, role, created_at, coalesce(revoked_at, 0) FROM tokens ORDER BY id");
  if (!q.ok()) return q.status();
  std::vector<TokenRow> out;
  MEGABATCH_RETURN_IF_ERROR(ForEachRow(*q, [&](Statement& r) {
    out.push_back({r.Int(0), r.Text(1), r.Text(2), r.Double(3), r.Double(4)});
  }));
  return out;
}

Status SweepStore::RevokeToken(int64_t token_id, double now) {
  std::lock_guard<std::mutex> lock(mu_);
  Result<Statement> q =
      db_->Prepare("SELECT revoked_at IS NOT NULL FROM tokens WHERE id = ?");
  if (!q.ok()) return q.status();
  q->Bind(1, token_id);
  Result<bool> row = q->Step();
  if (!row.ok()) return row.status();
  if (!*row) return NotFoundError("token " + std::to_string(token_id) + " not found");
  if (q->Int(0) != 0) {
    return FailedPreconditionError("token " + std::to_string(token_id) +
                                   " is already revoked");
  }
  Result<Statement> up = db_->Prepare("UPDATE tokens SET revoked_at = ? WHERE id = ?");
  if (!up.ok()) return up.status();
  up->Bind(1, now).Bind(2, token_id);
  return up->Run();
}

Result<std::optional<Lease>> SweepStore::LeaseNext(int64_t worker_id,
                                                   double now) {
  return std::move(LeaseBatch({worker_id}, now)[0]);
}

std::vector<Result<std::optional<Lease>>> SweepStore::LeaseBatch(
    const std::vector<int64_t>& worker_ids, double now, bool* gang_waiting) {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t n = worker_ids.size();
  std::vector<Result<std::optional<Lease>>> out(n, std::optional<Lease>());
  auto fail_all = [&](const Status& s) {
    out.assign(n, Result<std::optional<Lease>>(s));
    return out;
  };
  Transaction tx(db_.get());
  if (!tx.begin_status().ok()) return fail_all(tx.begin_status());
  bool granted = false;
  bool blocked = false;  // a gang trial waits for slots: lease nothing else
  std::vector<bool> done(n, false);
  std::optional<std::vector<LeaseCandidate>> candidates;
  for (size_t i = 0; i < n && !blocked; ++i) {
    if (done[i]) continue;
    done[i] = true;
    bool db_error = false;
    Result<int64_t> free = FreeSlotsLocked(worker_ids[i], &db_error);
    if (db_error) return fail_all(free.status());
    if (!free.ok()) {
      out[i] = free.status();
      continue;
    }
    if (*free <= 0) continue;
    if (!candidates.has_value()) {
      Result<std::vector<LeaseCandidate>> loaded = LeaseCandidatesLocked();
      if (!loaded.ok()) return fail_all(loaded.status());
      candidates = std::move(*loaded);
    }
    while (true) {
      Result<std::optional<Pick>> pick = PeekTrialLocked(&*candidates);
      if (!pick.ok()) return fail_all(pick.status());
      if (!pick->has_value()) break;
      const Pick& p = **pick;
      // Rank 0 is this request; the others come from the requests after it.
      std::vector<size_t> members{i};
      std::map<int64_t, int64_t> promised{{worker_ids[i], 1}};
      for (size_t j = i + 1; j < n && static_cast<int32_t>(members.size()) < p.ranks; ++j) {
        if (done[j]) continue;
        Result<int64_t> f = FreeSlotsLocked(worker_ids[j], &db_error);
        if (db_error) return fail_all(f.status());
        if (f.ok() && *f - promised[worker_ids[j]] > 0) {
          members.push_back(j);
          ++promised[worker_ids[j]];
        }
      }
      if (static_cast<int32_t>(members.size()) == p.ranks) {
        std::vector<int64_t> workers;
        for (size_t m : members) workers.push_back(worker_ids[m]);
        Result<std::vector<Lease>> leases = GrantLocked(p, workers, now, &db_error);
        if (db_error) return fail_all(leases.status());
        if (leases.ok()) {
          for (size_t r = 0; r < members.size(); ++r) {
            out[members[r]] = std::optional<Lease>((*leases)[r]);
            done[members[r]] = true;
          }
          granted = true;
          break;
        }
        // No rendezvous port free on rank 0's worker: wait like a gang
        // that lacks slots.
      }
      Result<int64_t> pool = AliveSlotsLocked();
      if (!pool.ok()) return fail_all(pool.status());
      if (p.ranks > *pool) {
        // Needs more slots than the pool has: it cannot hold up the others.
        p.sweep->exhausted = true;
        continue;
      }
      blocked = true;
      break;
    }
  }
  if (Status s = tx.Commit(); !s.ok()) return fail_all(s);
  if (granted) ++version_;
  if (gang_waiting != nullptr) *gang_waiting = blocked;
  return out;
}

Result<int64_t> SweepStore::AliveSlotsLocked() {
  Result<Statement*> q =
      db_->Cached("SELECT coalesce(sum(slots), 0) FROM workers WHERE state = 'alive'");
  if (!q.ok()) return q.status();
  Result<bool> row = (*q)->Step();
  if (!row.ok()) return row.status();
  const int64_t slots = (*q)->Int(0);
  (*q)->Reset();
  return slots;
}

Result<std::vector<SweepStore::LeaseCandidate>> SweepStore::LeaseCandidatesLocked() {
  Result<Statement*> q = db_->Cached(R"sql(
    SELECT s.id, s.priority, s.max_parallel,
           (SELECT count(*) FROM trials t WHERE t.sweep_id = s.id AND t.state = 'running')
    FROM sweeps s
    WHERE s.state IN ('queued', 'running')
      AND EXISTS (SELECT 1 FROM trials t WHERE t.sweep_id = s.id AND t.state = 'queued'))sql");
  if (!q.ok()) return q.status();
  std::vector<LeaseCandidate> out;
  while (true) {
    Result<bool> row = (*q)->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    out.push_back({(*q)->Int(0), (*q)->Int(1), (*q)->Int(2), (*q)->Int(3)});
  }
  return out;
}

Result<int64_t> SweepStore::FreeSlotsLocked(int64_t worker_id, bool* db_error) {
  auto failed = [db_error](const Status& s) {
    *db_error = true;
    return s;
  };
  static const std::string sql =
      "SELECT w.slots, w.state, " + HeldSlotsOfW() + " FROM workers w WHERE w.id = ?";
  Result<Statement*> w = db_->Cached(sql);
  if (!w.ok()) return failed(w.status());
  (*w)->Bind(1, worker_id);
  Result<bool> row = (*w)->Step();
  if (!row.ok()) return failed(row.status());
  if (!*row) {
    return NotFoundError("worker " + std::to_string(worker_id) + " not found; register again");
  }
  if ((*w)->Text(1) != "alive") {
    (*w)->Reset();
    return FailedPreconditionError("worker " + std::to_string(worker_id) +
                                   " is marked lost; heartbeat first");
  }
  const int64_t free = (*w)->Int(0) - (*w)->Int(2);
  (*w)->Reset();  // a cached statement must not hold its read open
  return free;
}

Result<std::optional<SweepStore::Pick>> SweepStore::PeekTrialLocked(
    std::vector<LeaseCandidate>* candidates) {
  // The sweep first: highest priority, then fewest running trials (fair
  // share), then oldest, within max_parallel; then its first queued trial
  // (an index lookup): the cost does not grow with the queue.
  while (true) {
    LeaseCandidate* best = nullptr;
    for (LeaseCandidate& c : *candidates) {
      if (c.exhausted || (c.max_parallel > 0 && c.running >= c.max_parallel)) continue;
      if (best == nullptr || c.priority > best->priority ||
          (c.priority == best->priority &&
           (c.running < best->running ||
            (c.running == best->running && c.sweep_id < best->sweep_id)))) {
        best = &c;
      }
    }
    if (best == nullptr) return std::optional<Pick>();
    Result<Statement*> q = db_->Cached(
        "SELECT id, config_json, lease_id, ranks FROM trials "
        "WHERE sweep_id = ? AND state = 'queued' ORDER BY trial_index LIMIT 1");
    if (!q.ok()) return q.status();
    (*q)->Bind(1, best->sweep_id);
    Result<bool> row = (*q)->Step();
    if (!row.ok()) return row.status();
    if (!*row) {
      best->exhausted = true;
      continue;
    }
    Pick p;
    p.sweep = best;
    p.trial_id = (*q)->Int(0);
    p.config_json = (*q)->Text(1);
    p.lease_id = (*q)->Int(2) + 1;
    p.ranks = static_cast<int32_t>((*q)->Int(3));
    (*q)->Reset();
    return std::optional<Pick>(std::move(p));
  }
}

Result<std::vector<Lease>> SweepStore::GrantLocked(const Pick& pick,
                                                   const std::vector<int64_t>& workers,
                                                   double now, bool* db_error) {
  auto failed = [db_error](const Status& s) {
    *db_error = true;
    return s;
  };
  std::string host;
  int64_t port = 0;
  if (pick.ranks > 1) {
    // The lowest port of rank 0's worker's range that none of the
    // data-parallel trials it leads uses.
    Result<Statement*> w = db_->Cached(
        "SELECT rendezvous_host, rendezvous_port_first, rendezvous_port_count, "
        "(SELECT group_concat(rendezvous_port) FROM trials "
        " WHERE worker_id = workers.id AND state = 'running' AND rendezvous_port IS NOT NULL) "
        "FROM workers WHERE id = ?");
    if (!w.ok()) return failed(w.status());
    (*w)->Bind(1, workers[0]);
    Result<bool> row = (*w)->Step();
    if (!row.ok()) return failed(row.status());
    if (!*row) return NotFoundError("worker " + std::to_string(workers[0]));
    host = (*w)->Text(0);
    const int64_t first = (*w)->Int(1), count = (*w)->Int(2);
    std::set<int64_t> used;
    std::stringstream taken((*w)->Text(3));
    for (std::string item; std::getline(taken, item, ',');) used.insert(std::stoll(item));
    (*w)->Reset();
    for (int64_t p = first; p < first + count && port == 0; ++p) {
      if (used.count(p) == 0) port = p;
    }
    if (port == 0) {
      return FailedPreconditionError("worker " + std::to_string(workers[0]) +
                                     " has no free rendezvous port");
    }
  }
  Result<Statement*> up = db_->Cached(
      "UPDATE trials SET state = 'running', worker_id = ?, lease_id = ?, "
      "attempts = attempts + 1, started_at = coalesce(started_at, ?), "
      "rendezvous_port = nullif(?, 0) WHERE id = ?");
  if (!up.ok()) return failed(up.status());
  (*up)->Bind(1, workers[0]).Bind(2, pick.lease_id).Bind(3, now).Bind(4, port);
  (*up)->Bind(5, pick.trial_id);
  if (Status s = (*up)->Run(); !s.ok()) return failed(s);
  std::string placed = "lease " + std::to_string(pick.lease_id);
  if (pick.ranks > 1) {
    Result<Statement*> clear = db_->Cached("DELETE FROM trial_ranks WHERE trial_id = ?");
    if (!clear.ok()) return failed(clear.status());
    (*clear)->Bind(1, pick.trial_id);
    if (Status s = (*clear)->Run(); !s.ok()) return failed(s);
    Result<Statement*> ins = db_->Cached(
        "INSERT INTO trial_ranks (trial_id, rank, lease_id, worker_id) VALUES (?, ?, ?, ?)");
    if (!ins.ok()) return failed(ins.status());
    placed += " as " + std::to_string(pick.ranks) + " ranks on workers " +
              std::to_string(workers[0]);
    for (size_t r = 1; r < workers.size(); ++r) {
      (*ins)->Reset();
      (*ins)->Bind(1, pick.trial_id).Bind(2, static_cast<int64_t>(r));
      (*ins)->Bind(3, pick.lease_id).Bind(4, workers[r]);
      if (Status s = (*ins)->Run(); !s.ok()) return failed(s);
      placed += ", " + std::to_string(workers[r]);
    }
    placed += "; rendezvous " + host + ":" + std::to_string(port);
  }
  if (Status s = AddEvent(pick.sweep->sweep_id, pick.trial_id, workers[0], "trial_leased",
                          placed, now);
      !s.ok()) {
    return failed(s);
  }
  // A lease can only move its sweep from queued to running.
  Result<Statement*> started =
      db_->Cached("UPDATE sweeps SET state = 'running' WHERE id = ? AND state = 'queued'");
  if (!started.ok()) return failed(started.status());
  (*started)->Bind(1, pick.sweep->sweep_id);
  if (Status s = (*started)->Run(); !s.ok()) return failed(s);
  ++pick.sweep->running;

  std::vector<Lease> leases;
  for (int32_t r = 0; r < pick.ranks; ++r) {
    Lease lease;
    lease.trial_id = pick.trial_id;
    lease.lease_id = pick.lease_id;
    lease.sweep_id = pick.sweep->sweep_id;
    lease.rank = r;
    lease.world_size = pick.ranks;
    if (pick.ranks == 1) {
      lease.config_json = pick.config_json;
    } else {
      nlohmann::json config = nlohmann::json::parse(pick.config_json);
      config["distributed"] = {{"world_size", pick.ranks}, {"rank", r}, {"host", host},
                               {"port", port}};
      lease.config_json = config.dump();
    }
    leases.push_back(std::move(lease));
  }
  return leases;
}

Status SweepStore::CheckLease(int64_t trial_id, int64_t lease_id, int64_t worker_id,
                              int32_t rank) {
  Result<Statement*> q = db_->Cached(
      "SELECT t.state, t.lease_id, coalesce(t.worker_id, 0), t.ranks, "
      "(SELECT r.worker_id FROM trial_ranks r WHERE r.trial_id = t.id AND r.rank = ?2 "
      " AND r.lease_id = t.lease_id) FROM trials t WHERE t.id = ?1");
  if (!q.ok()) return q.status();
  (*q)->Bind(1, trial_id).Bind(2, static_cast<int64_t>(rank));
  Result<bool> row = (*q)->Step();
  if (!row.ok()) return row.status();
  if (!*row) return NotFoundError("trial " + std::to_string(trial_id) + " not found");
  const std::string state = (*q)->Text(0);
  const int64_t holder = rank == 0 ? (*q)->Int(2) : (*q)->Int(4);
  const bool current = state == "running" && (*q)->Int(1) == lease_id && holder == worker_id &&
                       rank >= 0 && rank < (*q)->Int(3);
  (*q)->Reset();
  if (!current) {
    return AbortedError("trial " + std::to_string(trial_id) + " lease " +
                        std::to_string(lease_id) + (rank > 0 ? " rank " + std::to_string(rank) : "") +
                        " of worker " + std::to_string(worker_id) +
                        " is no longer current (trial is " + state + ")");
  }
  return Status();
}

Status SweepStore::ReleaseLease(int64_t trial_id, int64_t lease_id,
                                int64_t worker_id, double now, int32_t rank) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  Status current = CheckLease(trial_id, lease_id, worker_id, rank);
  if (current.code() == StatusCode::kAborted) return Status();
  MEGABATCH_RETURN_IF_ERROR(current);
  Result<Statement> up = db_->Prepare(
      "UPDATE trials SET state = 'queued', worker_id = NULL, "
      "attempts = attempts - 1 WHERE id = ? RETURNING sweep_id");
  if (!up.ok()) return up.status();
  up->Bind(1, trial_id);
  Result<bool> row = up->Step();
  if (!row.ok()) return row.status();
  int64_t sweep_id = up->Int(0);
  MEGABATCH_RETURN_IF_ERROR(up->Run());
  MEGABATCH_RETURN_IF_ERROR(AddEvent(
      sweep_id, trial_id, worker_id, "trial_released",
      "lease " + std::to_string(lease_id) +
          " taken back: the worker went away before receiving it",
      now));
  MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  ++version_;
  return Status();
}

Status SweepStore::AppendMetrics(int64_t trial_id, int64_t lease_id,
                                 int64_t worker_id,
                                 const std::vector<MetricPoint>& points,
                                 double now) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  MEGABATCH_RETURN_IF_ERROR(CheckLease(trial_id, lease_id, worker_id));
  Result<Statement*> cached = db_->Cached(
      "INSERT INTO metrics (trial_id, name, step, value, recorded_at) "
      "VALUES (?, ?, ?, ?, ?) ON CONFLICT (trial_id, name, step) "
      "DO UPDATE SET value = excluded.value, recorded_at = excluded.recorded_at");
  if (!cached.ok()) return cached.status();
  Statement& ins = **cached;
  for (const MetricPoint& p : points) {
    ins.Reset();
    ins.Bind(1, trial_id).Bind(2, p.name).Bind(3, p.step);
    if (std::isfinite(p.value)) {
      ins.Bind(4, p.value);
    } else {
      ins.BindNull(4);  // SQLite has no NaN; a diverged loss is stored as NULL
    }
    ins.Bind(5, now);
    MEGABATCH_RETURN_IF_ERROR(ins.Run());
  }
  const int64_t version = version_;
  MEGABATCH_RETURN_IF_ERROR(ApplyEarlyStopping(trial_id, points, now));
  Status committed = tx.Commit();
  if (!committed.ok()) version_ = version;
  return committed;
}

Status SweepStore::ApplyEarlyStopping(int64_t trial_id,
                                      const std::vector<MetricPoint>& points, double now) {
  // Only evaluations decide; most reports carry none, and skip the lookups.
  const bool evaluated = std::any_of(points.begin(), points.end(), [](const MetricPoint& p) {
    return FindSelectionMetric(p.name) != nullptr;
  });
  if (!evaluated) return Status();
  Result<Statement*> trial =
      db_->Cached("SELECT sweep_id, batch_size FROM trials WHERE id = ?");
  if (!trial.ok()) return trial.status();
  (*trial)->Bind(1, trial_id);
  Result<bool> found = (*trial)->Step();
  if (!found.ok()) return found.status();
  if (!*found) return NotFoundError("trial " + std::to_string(trial_id) + " not found");
  const int64_t sweep_id = (*trial)->Int(0), batch = (*trial)->Int(1);
  (*trial)->Reset();

  auto cached = early_stopping_.find(sweep_id);
  if (cached == early_stopping_.end()) {
    Result<Statement*> spec = db_->Cached("SELECT spec_json FROM sweeps WHERE id = ?");
    if (!spec.ok()) return spec.status();
    (*spec)->Bind(1, sweep_id);
    Result<bool> row = (*spec)->Step();
    if (!row.ok()) return row.status();
    std::optional<EarlyStopping> rule;
    if (*row) {
      auto json = nlohmann::json::parse((*spec)->Text(0), nullptr, false);
      if (json.is_object() && json.contains("early_stopping")) {
        const auto& e = json["early_stopping"];
        // Specs stored before the validation split may say test_*.
        const std::string metric(
            CanonicalSelectionMetric(e.value("metric", std::string("val_accuracy"))));
        const SelectionMetric* known = FindSelectionMetric(metric);
        rule = EarlyStopping{metric, known != nullptr && !known->higher_is_better,
                             e.value("min_samples", int64_t{0}),
                             e.value("reduction_factor", int64_t{3})};
      }
    }
    (*spec)->Reset();
    cached = early_stopping_.emplace(sweep_id, rule).first;
  }
  if (!cached->second || cached->second->min_samples <= 0) return Status();
  const EarlyStopping& rule = *cached->second;

  for (const MetricPoint& p : points) {
    if (p.name != rule.metric) continue;
    const int64_t samples = p.step * batch;
    // A non-finite value ranks last.
    const double value = std::isfinite(p.value) ? p.value
                         : rule.lower_is_better ? INFINITY
                                                : -INFINITY;
    int64_t boundary = rule.min_samples;
    for (int rung = 0; boundary <= samples; ++rung) {
      Result<Statement*> add = db_->Cached(
          "INSERT OR IGNORE INTO rungs (sweep_id, rung, trial_id, samples, value) "
          "VALUES (?, ?, ?, ?, ?)");
      if (!add.ok()) return add.status();
      (*add)->Bind(1, sweep_id).Bind(2, rung).Bind(3, trial_id).Bind(4, samples).Bind(5, value);
      MEGABATCH_RETURN_IF_ERROR((*add)->Run());
      const bool recorded = db_->Changes() > 0;
      boundary = boundary > (int64_t{1} << 50) / rule.reduction_factor
                     ? std::numeric_limits<int64_t>::max()
                     : boundary * rule.reduction_factor;
      if (!recorded) continue;  // this rung was decided before
      Result<Statement*> rank = db_->Cached(
          "SELECT count(*), sum(CASE WHEN ?3 THEN value < ?4 ELSE value > ?4 END) "
          "FROM rungs WHERE sweep_id = ?1 AND rung = ?2");
      if (!rank.ok()) return rank.status();
      (*rank)->Bind(1, sweep_id).Bind(2, rung).Bind(3, int64_t{rule.lower_is_better});
      (*rank)->Bind(4, value);
      Result<bool> r = (*rank)->Step();
      if (!r.ok()) return r.status();
      const int64_t n = (*rank)->Int(0), better = (*rank)->Int(1);
      (*rank)->Reset();
      const int64_t keep = std::max<int64_t>(1, n / rule.reduction_factor);
      if (better < keep) continue;
      Result<Statement*> prune = db_->Cached(
          "UPDATE trials SET state = 'pruned', finished_at = ? WHERE id = ?");
      if (!prune.ok()) return prune.status();
      (*prune)->Bind(1, now).Bind(2, trial_id);
      MEGABATCH_RETURN_IF_ERROR((*prune)->Run());
      char message[256];
      std::snprintf(message, sizeof(message),
                    "rung %d (%lld samples): %s %.6g is not in the top %lld of %lld",
                    rung, static_cast<long long>(samples), rule.metric.c_str(), p.value,
                    static_cast<long long>(keep), static_cast<long long>(n));
      MEGABATCH_RETURN_IF_ERROR(AddEvent(sweep_id, trial_id, 0, "trial_pruned", message, now));
      MEGABATCH_RETURN_IF_ERROR(RefreshSweepState(sweep_id, now));
      ++version_;
      return Status();
    }
  }
  return Status();
}

Result<TrialState> SweepStore::FinishTrial(int64_t trial_id, int64_t lease_id,
                                           int64_t worker_id,
                                           TrialState outcome,
                                           const std::string& message,
                                           const std::string& stderr_tail,
                                           double now, int32_t rank) {
  if (outcome != TrialState::kCompleted && outcome != TrialState::kFailed &&
      outcome != TrialState::kDiverged) {
    return InvalidArgumentError(
        std::string("outcome: must be completed, failed or diverged, got ") +
        TrialStateName(outcome));
  }
  std::lock_guard<std::mutex> lock(mu_);
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  if (rank > 0 && outcome != TrialState::kFailed) {
    // Rank 0 reports how the trial ended; another rank's exit says nothing
    // new (and may come after rank 0's report).
    Result<Statement> state = db_->Prepare("SELECT state FROM trials WHERE id = ?");
    if (!state.ok()) return state.status();
    state->Bind(1, trial_id);
    Result<bool> row = state->Step();
    if (!row.ok()) return row.status();
    if (!*row) return NotFoundError("trial " + std::to_string(trial_id) + " not found");
    return ParseTrialState(state->Text(0)).value_or(TrialState::kQueued);
  }
  MEGABATCH_RETURN_IF_ERROR(CheckLease(trial_id, lease_id, worker_id, rank));
  Result<Statement> q = db_->Prepare(
      "SELECT t.sweep_id, t.attempts, s.max_retries FROM trials t "
      "JOIN sweeps s ON s.id = t.sweep_id WHERE t.id = ?");
  if (!q.ok()) return q.status();
  q->Bind(1, trial_id);
  Result<bool> row = q->Step();
  if (!row.ok()) return row.status();
  int64_t sweep_id = q->Int(0);
  int64_t attempts = q->Int(1);
  int64_t max_retries = q->Int(2);

  TrialState next = outcome;
  if (outcome == TrialState::kFailed && attempts <= max_retries) {
    next = TrialState::kQueued;
  }
  std::string tail = stderr_tail.size() > kMaxStoredStderr
                         ? stderr_tail.substr(stderr_tail.size() - kMaxStoredStderr)
                         : stderr_tail;
  Result<Statement> up = db_->Prepare(
      "UPDATE trials SET state = ?, worker_id = CASE WHEN ? THEN NULL ELSE "
      "worker_id END, error = nullif(?, ''), finished_at = ? WHERE id = ?");
  if (!up.ok()) return up.status();
  up->Bind(1, TrialStateName(next)).Bind(2, int64_t{next == TrialState::kQueued});
  up->Bind(3, outcome == TrialState::kCompleted ? std::string() : message);
  if (IsFinal(next)) {
    up->Bind(4, now);
  } else {
    up->BindNull(4);
  }
  up->Bind(5, trial_id);
  MEGABATCH_RETURN_IF_ERROR(up->Run());
  std::string event = std::string("attempt ") + std::to_string(attempts) + " " +
                      TrialStateName(outcome);
  if (!message.empty()) event += ": " + message;
  if (next == TrialState::kQueued) event += "; requeued for a retry";
  if (!tail.empty()) event += "\n--- trainer stderr (tail) ---\n" + tail;
  MEGABATCH_RETURN_IF_ERROR(AddEvent(
      sweep_id, trial_id, worker_id,
      std::string("trial_") + TrialStateName(outcome), event, now));
  // An adaptive study plans its next trials from this result, in the same
  // transaction: the plan always matches the results stored.
  MEGABATCH_RETURN_IF_ERROR(PlanLocked(sweep_id, now));
  MEGABATCH_RETURN_IF_ERROR(RefreshSweepState(sweep_id, now));
  MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  ++version_;
  return next;
}

Result<int> SweepStore::ExpireWorkers(double deadline, double now) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction tx(db_.get());
  MEGABATCH_RETURN_IF_ERROR(tx.begin_status());
  Result<Statement> lost = db_->Prepare(
      "SELECT id FROM workers WHERE state = 'alive' AND last_heartbeat_at < ?");
  if (!lost.ok()) return lost.status();
  lost->Bind(1, deadline);
  std::vector<int64_t> ids;
  MEGABATCH_RETURN_IF_ERROR(
      ForEachRow(*lost, [&](Statement& r) { ids.push_back(r.Int(0)); }));
  int requeued = 0;
  std::set<int64_t> sweeps;
  for (int64_t id : ids) {
    Result<Statement> trials = db_->Prepare(
        "SELECT DISTINCT h.trial_id, t.sweep_id FROM holdings h "
        "JOIN trials t ON t.id = h.trial_id WHERE h.worker_id = ?");
    if (!trials.ok()) return trials.status();
    trials->Bind(1, id);
    std::vector<std::pair<int64_t, int64_t>> held;
    MEGABATCH_RETURN_IF_ERROR(ForEachRow(*trials, [&](Statement& r) {
      held.emplace_back(r.Int(0), r.Int(1));
    }));
    for (const auto& [trial_id, sweep_id] : held) {
      MEGABATCH_RETURN_IF_ERROR(AddEvent(sweep_id, trial_id, id, "trial_requeued",
                                         "worker lost; lease revoked", now));
      sweeps.insert(sweep_id);
    }
    Result<Statement> requeue = db_->Prepare(
        "UPDATE trials SET state = 'queued', worker_id = NULL "
        "WHERE id = ? AND state = 'running'");
    if (!requeue.ok()) return requeue.status();
    for (const auto& held_trial : held) {
      requeue->Reset();
      requeue->Bind(1, held_trial.first);
      MEGABATCH_RETURN_IF_ERROR(requeue->Run());
      requeued += db_->Changes();
    }
    Result<Statement> mark =
        db_->Prepare("UPDATE workers SET state = 'lost' WHERE id = ?");
    if (!mark.ok()) return mark.status();
    mark->Bind(1, id);
    MEGABATCH_RETURN_IF_ERROR(mark->Run());
    MEGABATCH_RETURN_IF_ERROR(
        AddEvent(0, 0, id, "worker_lost", "no heartbeat", now));
  }
  for (int64_t sweep_id : sweeps) {
    MEGABATCH_RETURN_IF_ERROR(RefreshSweepState(sweep_id, now));
  }
  MEGABATCH_RETURN_IF_ERROR(tx.Commit());
  if (!ids.empty()) ++version_;
  return requeued;
}

}  // namespace megabatch::store
