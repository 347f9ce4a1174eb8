// SweepStore: the coordinator's state, in one SQLite file.
//
// Sweeps, their trials, metrics, workers and an event log live in the tables
// documented in docs/results-database.md. The schema is versioned with
// PRAGMA user_version and migrated on Open(). Every state change of a trial
// happens in one transaction, so a crash leaves either the old or the new
// state, never a mix.
//
// The code is split along its policy seams: sweep_store.cc (sweeps, trials,
// workers, metrics, expiry), leasing.cc (which queued trial goes to which
// worker). Pure decisions live in server/planner/ (the adaptive plan, the
// early-stopping rungs); tokens in server/auth/token_store.h.
#ifndef MEGABATCH_SERVER_STORE_SWEEP_STORE_H_
#define MEGABATCH_SERVER_STORE_SWEEP_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "server/planner/early_stopping.h"
#include "server/spec/sweep_spec.h"
#include "server/store/db.h"

namespace megabatch::store {

// The current schema version; Open() migrates older files up to it.
inline constexpr int kSchemaVersion = 12;

// kPruned: stopped early by the sweep's early_stopping rule (successive
// halving): a result of the study, like kDiverged.
enum class TrialState {
  kQueued,
  kRunning,
  kCompleted,
  kFailed,
  kCancelled,
  kDiverged,
  kPruned
};
enum class SweepState { kQueued, kRunning, kCompleted, kFailed, kCancelled };

// Every state with its lower-case name as stored in the database (and as
// the proto's enum names, less their prefix): the one list the store, the
// exporter and the CLI read.
inline constexpr std::pair<TrialState, const char*> kTrialStateNames[] = {
    {TrialState::kQueued, "queued"},       {TrialState::kRunning, "running"},
    {TrialState::kCompleted, "completed"}, {TrialState::kFailed, "failed"},
    {TrialState::kCancelled, "cancelled"}, {TrialState::kDiverged, "diverged"},
    {TrialState::kPruned, "pruned"},
};
inline constexpr std::pair<SweepState, const char*> kSweepStateNames[] = {
    {SweepState::kQueued, "queued"},       {SweepState::kRunning, "running"},
    {SweepState::kCompleted, "completed"}, {SweepState::kFailed, "failed"},
    {SweepState::kCancelled, "cancelled"},
};
const char* TrialStateName(TrialState s);
const char* SweepStateName(SweepState s);
std::optional<TrialState> ParseTrialState(std::string_view name);
std::optional<SweepState> ParseSweepState(std::string_view name);
inline bool IsFinal(TrialState s) {
  return s != TrialState::kQueued && s != TrialState::kRunning;
}
inline bool IsFinal(SweepState s) {
  return s != SweepState::kQueued && s != SweepState::kRunning;
}

struct SweepRow {
  int64_t id = 0;
  std::string name;
  SweepState state = SweepState::kQueued;
  int32_t priority = 0;
  int32_t max_parallel = 0;
  int32_t max_retries = 0;
  double created_at = 0;
  double finished_at = 0;
  std::string owner;  // the submitting token's name; empty without auth
  std::map<TrialState, int32_t> trial_counts;  // absent states: 0
  int32_t trials_total = 0;
  // An adaptive study's phase (probe, search, finish, done); empty: a grid.
  std::string phase;
};

struct TrialRow {
  int64_t id = 0;
  int64_t sweep_id = 0;
  int32_t index = 0;
  std::string optimizer;
  int64_t batch_size = 0;
  double lr = 0;
  double lr_multiplier = 1;
  int64_t seed = 0;
  TrialState state = TrialState::kQueued;
  int64_t worker_id = 0;
  int64_t lease_id = 0;
  int32_t attempts = 0;
  std::string error;
  double started_at = 0;
  double finished_at = 0;
  std::map<std::string, double> latest_metrics;
  std::string phase;  // the adaptive phase that created it; empty in a grid
};

struct WorkerRow {
  int64_t id = 0;
  std::string name;
  int32_t slots = 0;
  int32_t busy_slots = 0;
  bool alive = true;
  double last_heartbeat_at = 0;
};

// A trial handed to a worker: run `config_json` under (trial_id, lease_id).
struct Lease {
  int64_t trial_id = 0;
  int64_t lease_id = 0;
  int64_t sweep_id = 0;
  // The trainer config; for a data-parallel trial with its "distributed"
  // block (this rank, the world size, rank 0's rendezvous).
  std::string config_json;
  int32_t rank = 0;
  int32_t world_size = 1;
  // The newest step whose train_loss is stored (-1: none): a retry resumes
  // from no checkpoint past it (after a restore from a backup, the points
  // of later checkpoints are not in the database).
  int64_t resume_max_step = -1;
};

// One trial a worker reports running, under a lease, as a rank.
struct RunningLease {
  int64_t trial_id = 0;
  int64_t lease_id = 0;
  int32_t rank = 0;
};

// Where a worker serves the rendezvous of data-parallel trials whose rank 0
// it runs: an address other workers reach it at, and a port range.
struct WorkerRendezvous {
  std::string host = "127.0.0.1";
  int32_t port_first = 29500;
  int32_t port_count = 100;
};

struct MetricPoint {
  std::string name;
  int64_t step = 0;
  double value = 0;
};

// What a committed change may mean to the scheduler.
enum class Change {
  // Only what watchers show: a lease granted, a worker registered.
  kView,
  // Work or slots may have appeared: a sweep submitted or cancelled, an
  // attempt ended, a trial requeued, pruned or released.
  kWork,
};

// Thread-safe: every call runs under one internal mutex on one connection.
// Why a lease is given back without an outcome.
enum class Release {
  kUnreceived,  // the worker went away before the lease reached it
  kPreempted,   // the worker is draining (SIGTERM) and gave the trial back
};

class SweepStore {
 public:
  // Opens or creates the database at `path` and migrates it to
  // kSchemaVersion. Errors: DATA_LOSS for a file that is not a megabatch
  // database or is newer than this binary; FAILED_PRECONDITION if it cannot
  // be opened.
  static Result<std::unique_ptr<SweepStore>> Open(const std::string& path);

  SweepStore(const SweepStore&) = delete;
  SweepStore& operator=(const SweepStore&) = delete;

  // Stores a sweep and its trials atomically. With a non-empty `request_id`
  // that the same owner used before for the same spec (its canonical JSON),
  // returns that sweep's id with `existed` instead of creating another;
  // for a different spec, ALREADY_EXISTS naming that sweep. Request ids of
  // other owners are never seen.
  struct CreatedSweep {
    int64_t id = 0;
    bool existed = false;  // the request id named a sweep already stored
  };
  Result<CreatedSweep> CreateSweep(const spec::SweepSpec& spec,
                                   const std::vector<spec::TrialSpec>& trials,
                                   const std::string& request_id, double now,
                                   const std::string& owner = "");
  // NOT_FOUND for an unknown id.
  Result<SweepRow> GetSweep(int64_t sweep_id);
  // Sweeps with id > after_id in id order, at most `limit` (-1: all).
  Result<std::vector<SweepRow>> ListSweeps(int64_t after_id = 0,
                                           int64_t limit = -1);
  // Cancels every queued or running trial of the sweep. FAILED_PRECONDITION
  // if the sweep already ended; NOT_FOUND for an unknown id.
  Result<SweepRow> CancelSweep(int64_t sweep_id, double now);
  // NOT_FOUND for an unknown sweep.
  // Trials with trial_index > after_index in index order, at most `limit`
  // (-1: all).
  Result<std::vector<TrialRow>> ListTrials(int64_t sweep_id,
                                           int64_t after_index = -1,
                                           int64_t limit = -1);

  // `owner` is the credential registering it (token name or certificate
  // common name): the only one that may act for the worker (WorkerOwner).
  Result<int64_t> RegisterWorker(const std::string& name, int32_t slots,
                                 double now,
                                 const WorkerRendezvous& rendezvous = {},
                                 const std::string& owner = "");
  // The queued and running trials of every sweep `owner` owns.
  Result<int64_t> PendingTrials(const std::string& owner);
  // The credential that registered the worker; NOT_FOUND for an unknown id.
  Result<std::string> WorkerOwner(int64_t worker_id);

  // Appends to the audit table: who (`caller`, with `role`) did `action` on
  // `object`, and how it ended (`status`, a gRPC code name); `detail` adds
  // what else matters (a query's SQL). Strings are cut to 1,000 bytes.
  Status Audit(const std::string& caller, const std::string& role,
               const std::string& action, const std::string& object,
               const std::string& status, const std::string& detail,
               double now);
  // Records a heartbeat (reviving a worker marked lost) and returns which of
  // `running` the worker must stop: trials no longer running under that
  // lease (for that rank, on this worker). NOT_FOUND for an unknown worker.
  Result<std::vector<int64_t>> Heartbeat(
      int64_t worker_id, const std::vector<RunningLease>& running, double now);
  // Workers with id > after_id in id order, at most `limit` (-1: all).
  Result<std::vector<WorkerRow>> ListWorkers(int64_t after_id = 0,
                                             int64_t limit = -1);

  // Leases the next queued trial to the worker if it has a free slot: higher
  // priority first, then the sweep with the fewest running trials (fair
  // share), honouring max_parallel. nullopt when nothing fits.
  Result<std::optional<Lease>> LeaseNext(int64_t worker_id, double now);
  // LeaseNext for each worker in turn, all in one transaction (one commit for
  // the lot: the scheduler batches requests that arrive together). A worker's
  // own error (NOT_FOUND, FAILED_PRECONDITION) is its entry's; a database
  // error fails every entry and stores nothing.
  //
  // A trial of R > 1 ranks is placed all at once or not at all (gang
  // scheduling) on R requests of this batch, the first as rank 0. When the
  // trial first in line cannot be placed yet, nothing after it is leased in
  // this batch (its slots wait for it rather than letting smaller trials
  // starve it), unless it needs more slots than all alive workers have.
  // `*gang_waiting` (if given) says whether a gang trial was left waiting.
  std::vector<Result<std::optional<Lease>>> LeaseBatch(
      const std::vector<int64_t>& worker_ids, double now,
      bool* gang_waiting = nullptr);

  // Takes back a lease whose worker never received it (the RPC's client went
  // away): the trial (all its ranks) is queued again and the attempt is not
  // counted. No-op if the lease is no longer current.
  // With kPreempted the worker gave it back (drained); `why` goes in the
  // event log, as "trial_preempted".
  Status ReleaseLease(int64_t trial_id, int64_t lease_id, int64_t worker_id,
                      double now, int32_t rank = 0,
                      Release why = Release::kUnreceived,
                      const std::string& message = "");

  // Stores points for a trial held under (worker_id, lease_id), replacing any
  // value already stored for the same (trial, name, step), and applies the
  // sweep's early stopping (the trial may end pruned). ABORTED if the lease
  // is not current; NOT_FOUND for an unknown trial.
  Status AppendMetrics(int64_t trial_id, int64_t lease_id, int64_t worker_id,
                       const std::vector<MetricPoint>& points, double now);

  // Ends an attempt. A failed attempt is requeued while the trial has retries
  // left, unless `retry` is false (its input is wrong). Returns the trial's
  // new state. ABORTED if the lease is not current.
  // Of a data-parallel trial, rank 0 reports the outcome; another rank's
  // failure ends the attempt for all ranks, its completion changes nothing.
  Result<TrialState> FinishTrial(int64_t trial_id, int64_t lease_id,
                                 int64_t worker_id, TrialState outcome,
                                 const std::string& message,
                                 const std::string& stderr_tail, double now,
                                 int32_t rank = 0, bool retry = true);

  // Marks workers silent since before `deadline` as lost and requeues their
  // running trials (a data-parallel trial when any of its ranks was there).
  // Returns how many trials were requeued.
  Result<int> ExpireWorkers(double deadline, double now);

  // Makes a database just restored from a backup safe to serve from, in one
  // transaction: every running trial goes back to the queue (its retry
  // resumes from a checkpoint at or before its last stored step, see
  // Lease::resume_max_step); every trial's lease id and every table's next
  // sweep, trial and worker id jump by `id_gap`, past any the lost
  // coordinator can have given out after the backup, so that nothing a
  // worker still holds from it matches; every worker is marked lost until it
  // heartbeats. Returns how many trials were requeued.
  Result<int> FenceAfterRestore(int64_t id_gap, double now);

  // A counter that changes whenever any sweep or trial state changes (after
  // the change is committed); lets watchers skip unchanged snapshots
  // cheaply. Lock-free.
  int64_t version() const { return version_.load(); }

  // Caps the database file at about `bytes` (SQLite's max_page_count on this
  // connection; 0: no cap beyond SQLite's own). A write that would pass it
  // fails RESOURCE_EXHAUSTED and stores nothing, as on a full disk.
  Status SetMaxBytes(int64_t bytes);
  // At most `n` running trials (slots) over all of one owner's sweeps; a
  // lease skips an owner at the quota (0: no quota; sweeps without an owner,
  // from a coordinator without authentication, have none).
  void SetMaxRunningPerOwner(int64_t n) EXCLUDES(mu_);

  // Called after each committed change (outside the store's lock, from the
  // thread that made it): the scheduler wakes parked lease requests and
  // watchers with it, so that no caller has to remember to. Replaces the
  // previous listener; SetListener(nullptr) returns once no call of the old
  // one is running.
  void SetListener(std::function<void(Change)> listener) EXCLUDES(listener_mu_);

 private:
  // Holds mu_; on release, tells the listener what the holder changed.
  class SCOPED_CAPABILITY Locked {
   public:
    explicit Locked(SweepStore* store) ACQUIRE(store->mu_);
    ~Locked() RELEASE();
    Locked(const Locked&) = delete;
    Locked& operator=(const Locked&) = delete;

   private:
    SweepStore* const store_;
  };
  // Records a committed change: bumps version() and queues the listener's call.
  void Changed(Change change) REQUIRES(mu_);
  // The SQL for the slots the worker `w` holds (rank 0s and other ranks).
  static const std::string& HeldSlotsSql();
  // The sweep's stored spec, parsed. DATA_LOSS if it no longer parses.
  Result<spec::SweepSpec> StoredSpecLocked(int64_t sweep_id) REQUIRES(mu_);

  explicit SweepStore(std::unique_ptr<Db> db) : db_(std::move(db)) {}
  Status Migrate() REQUIRES(mu_);
  Status AddEvent(int64_t sweep_id, int64_t trial_id, int64_t worker_id,
                  const std::string& kind, const std::string& message,
                  double now) REQUIRES(mu_);
  // Sets the sweep's state from its trials' states.
  Status RefreshSweepState(int64_t sweep_id, double now) REQUIRES(mu_);
  // Inserts `trials` into the sweep, each with its phase ("" for none).
  Status InsertTrialsLocked(int64_t sweep_id,
                            const std::vector<spec::TrialSpec>& trials,
                            const std::vector<std::string>& phases)
      REQUIRES(mu_);
  // For an adaptive sweep (spec.strategy), adds the trials its planner asks
  // for next and records its decisions as 'plan' events; a grid: nothing.
  // Runs inside the caller's transaction.
  Status PlanLocked(int64_t sweep_id, double now) REQUIRES(mu_);
  Result<SweepRow> GetSweepLocked(int64_t sweep_id) REQUIRES(mu_);
  // An active sweep that had queued trials when a lease batch began, with
  // its running trials counted once per batch and kept up to date in it.
  int64_t max_running_per_owner_ GUARDED_BY(mu_) = 0;
  struct LeaseCandidate {
    int64_t sweep_id = 0;
    int64_t priority = 0;
    int64_t max_parallel = 0;
    int64_t running = 0;
    std::string owner;
    int64_t owner_running = 0;  // running trials of all the owner's sweeps
    bool exhausted = false;  // no queued trial left, or none that fits the pool
  };
  Result<std::vector<LeaseCandidate>> LeaseCandidatesLocked() REQUIRES(mu_);
  // A worker's free slots (slots less what it holds), or why it may not
  // lease (`refused`: NOT_FOUND or FAILED_PRECONDITION for an unknown or
  // lost worker). The Result's own error is the database's.
  struct WorkerSlots {
    Status refused;
    int64_t free = 0;
  };
  Result<WorkerSlots> FreeSlotsLocked(int64_t worker_id) REQUIRES(mu_);
  // The slots of all alive workers.
  Result<int64_t> AliveSlotsLocked() REQUIRES(mu_);
  // The next queued trial in leasing order, not yet taken.
  struct Pick {
    LeaseCandidate* sweep = nullptr;
    int64_t trial_id = 0;
    std::string config_json;
    int64_t lease_id = 0;  // the lease it gets
    int32_t ranks = 1;
  };
  Result<std::optional<Pick>> PeekTrialLocked(
      std::vector<LeaseCandidate>* candidates) REQUIRES(mu_);
  // Leases `pick` with rank r on workers[r]; one Lease per rank. nullopt
  // when rank 0's worker has no rendezvous port free; an error is the
  // database's.
  Result<std::optional<std::vector<Lease>>> GrantLocked(
      const Pick& pick, const std::vector<int64_t>& workers, double now)
      REQUIRES(mu_);
  Status CheckLease(int64_t trial_id, int64_t lease_id, int64_t worker_id,
                    int32_t rank = 0) REQUIRES(mu_);
  // Successive halving (the sweep's early_stopping): records the trial's
  // value at each rung its new points reach and prunes it when it is not in
  // the top max(1, n / reduction_factor) of the n values at that rung.
  Status ApplyEarlyStopping(int64_t trial_id,
                            const std::vector<MetricPoint>& points, double now)
      REQUIRES(mu_);

  // Parsed from each sweep's spec once; nullopt: no early stopping.
  std::map<int64_t, std::optional<planner::EarlyStoppingRule>> early_stopping_
      GUARDED_BY(mu_);

  // Group commit for the frequent small writes (metric reports,
  // heartbeats): a write queued while another caller commits waits; the
  // next leader runs every queued write in one transaction, each in its own
  // savepoint, so a refused one (a stale lease, a full database) undoes only
  // itself. A thousand workers then cost tens of commits a second, not
  // thousands, and far fewer hand-offs of mu_.
  struct GroupedWrite {
    std::function<Status()> body;  // runs under mu_ in the group's transaction
    Status result;
    bool done = false;
  };
  Status RunGrouped(std::function<Status()> body) EXCLUDES(mu_, group_mu_);
  void CommitGroup(const std::vector<GroupedWrite*>& group) EXCLUDES(mu_);
  Mutex group_mu_;
  CondVar group_cv_{&group_mu_};
  std::vector<GroupedWrite*> group_queue_ GUARDED_BY(group_mu_);
  bool group_leading_ GUARDED_BY(group_mu_) = false;

  mutable Mutex mu_;
  std::unique_ptr<Db> db_ GUARDED_BY(mu_);
  std::atomic<int64_t> version_{0};
  // The strongest change since the lock was taken, for the listener.
  std::optional<Change> pending_ GUARDED_BY(mu_);
  // Held while the listener runs (never together with mu_).
  Mutex listener_mu_;
  std::function<void(Change)> listener_ GUARDED_BY(listener_mu_);
};

}  // namespace megabatch::store

#endif  // MEGABATCH_SERVER_STORE_SWEEP_STORE_H_
