// Leasing: which queued trial goes to which worker. Priority first, then
// fair share (the sweep with the fewest running trials), within each sweep's
// max_parallel; data-parallel trials are placed all at once (gang) or wait.
// Part of SweepStore (server/store/sweep_store.h): every decision runs in the
// lease batch's transaction.
#include <sys/random.h>

#include <map>
#include <random>
#include <set>
#include <sstream>

#include "common/trial_config.h"
#include "server/store/sweep_store.h"  // IWYU pragma: associated

namespace megabatch::store {
namespace {

// A lease id no other worker can guess: 62 random bits (positive, and far
// from overflowing when a restore adds its gap), never 0.
int64_t NewLeaseId() {
  uint64_t bits = 0;
  if (getrandom(&bits, sizeof bits, 0) != static_cast<ssize_t>(sizeof bits)) {
    bits = std::random_device()();
    bits = (bits << 32) ^ std::random_device()();
  }
  return static_cast<int64_t>(bits >> 2) | 1;
}

}  // namespace

Result<std::optional<Lease>> SweepStore::LeaseNext(int64_t worker_id,
                                                   double now) {
  return std::move(LeaseBatch({worker_id}, now)[0]);
}

std::vector<Result<std::optional<Lease>>> SweepStore::LeaseBatch(
    const std::vector<int64_t>& worker_ids, double now, bool* gang_waiting) {
  Locked lock(this);
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
    Result<WorkerSlots> slots = FreeSlotsLocked(worker_ids[i]);
    if (!slots.ok()) return fail_all(slots.status());
    if (!slots->refused.ok()) {
      out[i] = slots->refused;
      continue;
    }
    if (slots->free <= 0) continue;
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
      for (size_t j = i + 1;
           j < n && static_cast<int32_t>(members.size()) < p.ranks; ++j) {
        if (done[j]) continue;
        Result<WorkerSlots> other = FreeSlotsLocked(worker_ids[j]);
        if (!other.ok()) return fail_all(other.status());
        if (other->refused.ok() && other->free - promised[worker_ids[j]] > 0) {
          members.push_back(j);
          ++promised[worker_ids[j]];
        }
      }
      if (static_cast<int32_t>(members.size()) == p.ranks) {
        std::vector<int64_t> workers;
        for (size_t m : members) workers.push_back(worker_ids[m]);
        Result<std::optional<std::vector<Lease>>> leases =
            GrantLocked(p, workers, now);
        if (!leases.ok()) return fail_all(leases.status());
        if (leases->has_value()) {
          for (size_t r = 0; r < members.size(); ++r) {
            out[members[r]] = std::optional<Lease>((**leases)[r]);
            done[members[r]] = true;
          }
          for (LeaseCandidate& c : *candidates) {
            if (c.owner == p.sweep->owner) ++c.owner_running;
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
  if (granted) Changed(Change::kView);
  if (gang_waiting != nullptr) *gang_waiting = blocked;
  return out;
}

void SweepStore::SetMaxRunningPerOwner(int64_t n) {
  Locked lock(this);
  max_running_per_owner_ = n;
}

Result<int64_t> SweepStore::AliveSlotsLocked() {
  MEGABATCH_ASSIGN_OR_RETURN(
      CachedStatement q,
      db_->Cached(
          "SELECT coalesce(sum(slots), 0) FROM workers WHERE state = 'alive'"));
  MEGABATCH_RETURN_IF_ERROR(q->Step().status());
  const int64_t slots = q->Int(0);
  return slots;
}

Result<std::vector<SweepStore::LeaseCandidate>>
SweepStore::LeaseCandidatesLocked() {
  MEGABATCH_ASSIGN_OR_RETURN(CachedStatement q, db_->Cached(R"sql(
    SELECT s.id, s.priority, s.max_parallel,
           (SELECT count(*) FROM trials t WHERE t.sweep_id = s.id AND t.state = 'running'),
           coalesce(s.owner, ''),
           (SELECT count(*) FROM trials t JOIN sweeps o ON o.id = t.sweep_id
              WHERE coalesce(o.owner, '') = coalesce(s.owner, '') AND t.state = 'running')
    FROM sweeps s
    WHERE s.state IN ('queued', 'running')
      AND EXISTS (SELECT 1 FROM trials t WHERE t.sweep_id = s.id AND t.state = 'queued'))sql"));
  std::vector<LeaseCandidate> out;
  while (true) {
    MEGABATCH_ASSIGN_OR_RETURN(bool row, q->Step());
    if (!row) break;
    out.push_back(
        {q->Int(0), q->Int(1), q->Int(2), q->Int(3), q->Text(4), q->Int(5)});
  }
  return out;
}

Result<SweepStore::WorkerSlots> SweepStore::FreeSlotsLocked(int64_t worker_id) {
  static const std::string sql = "SELECT w.slots, w.state, " + HeldSlotsSql() +
                                 " FROM workers w WHERE w.id = ?";
  MEGABATCH_ASSIGN_OR_RETURN(CachedStatement w, db_->Cached(sql));
  w->Bind(1, worker_id);
  MEGABATCH_ASSIGN_OR_RETURN(bool row, w->Step());
  WorkerSlots slots;
  if (!row) {
    slots.refused = NotFoundError("worker " + std::to_string(worker_id) +
                                  " not found; register again");
  } else if (w->Text(1) != "alive") {
    slots.refused =
        FailedPreconditionError("worker " + std::to_string(worker_id) +
                                " is marked lost; heartbeat first");
  } else {
    slots.free = w->Int(0) - w->Int(2);
  }
  return slots;
}

Result<std::optional<SweepStore::Pick>> SweepStore::PeekTrialLocked(
    std::vector<LeaseCandidate>* candidates) {
  // The sweep first: highest priority, then fewest running trials (fair
  // share), then oldest, within max_parallel; then its first queued trial
  // (an index lookup): the cost does not grow with the queue.
  while (true) {
    LeaseCandidate* best = nullptr;
    for (LeaseCandidate& c : *candidates) {
      if (c.exhausted || (c.max_parallel > 0 && c.running >= c.max_parallel))
        continue;
      if (max_running_per_owner_ > 0 && !c.owner.empty() &&
          c.owner_running >= max_running_per_owner_) {
        continue;  // the owner's running-trials quota
      }
      if (best == nullptr || c.priority > best->priority ||
          (c.priority == best->priority &&
           (c.running < best->running ||
            (c.running == best->running && c.sweep_id < best->sweep_id)))) {
        best = &c;
      }
    }
    if (best == nullptr) return std::optional<Pick>();
    MEGABATCH_ASSIGN_OR_RETURN(
        CachedStatement q,
        db_->Cached("SELECT id, config_json, ranks FROM trials "
                    "WHERE sweep_id = ? AND state = 'queued' ORDER BY "
                    "trial_index LIMIT 1"));
    q->Bind(1, best->sweep_id);
    MEGABATCH_ASSIGN_OR_RETURN(bool row, q->Step());
    if (!row) {
      best->exhausted = true;
      continue;
    }
    Pick p;
    p.sweep = best;
    p.trial_id = q->Int(0);
    p.config_json = q->Text(1);
    p.lease_id = NewLeaseId();
    p.ranks = static_cast<int32_t>(q->Int(2));
    return std::optional<Pick>(std::move(p));
  }
}

Result<std::optional<std::vector<Lease>>> SweepStore::GrantLocked(
    const Pick& pick, const std::vector<int64_t>& workers, double now) {
  std::string host;
  int64_t port = 0;
  if (pick.ranks > 1) {
    // The lowest port of rank 0's worker's range that none of the
    // data-parallel trials it leads uses.
    MEGABATCH_ASSIGN_OR_RETURN(
        CachedStatement w,
        db_->Cached("SELECT rendezvous_host, rendezvous_port_first, "
                    "rendezvous_port_count, "
                    "(SELECT group_concat(rendezvous_port) FROM trials "
                    " WHERE worker_id = workers.id AND state = 'running' AND "
                    "rendezvous_port IS NOT NULL) "
                    "FROM workers WHERE id = ?"));
    w->Bind(1, workers[0]);
    MEGABATCH_ASSIGN_OR_RETURN(bool row, w->Step());
    if (!row) return NotFoundError("worker " + std::to_string(workers[0]));
    host = w->Text(0);
    const int64_t first = w->Int(1), count = w->Int(2);
    std::set<int64_t> used;
    std::stringstream taken(w->Text(3));
    for (std::string item; std::getline(taken, item, ',');)
      used.insert(std::stoll(item));
    w->Reset();
    for (int64_t p = first; p < first + count && port == 0; ++p) {
      if (used.count(p) == 0) port = p;
    }
    if (port == 0) return std::optional<std::vector<Lease>>();
  }
  MEGABATCH_ASSIGN_OR_RETURN(
      CachedStatement up,
      db_->Cached(
          "UPDATE trials SET state = 'running', worker_id = ?, lease_id = ?, "
          "attempts = attempts + 1, started_at = coalesce(started_at, ?), "
          "rendezvous_port = nullif(?, 0) WHERE id = ?"));
  up->Bind(1, workers[0]).Bind(2, pick.lease_id).Bind(3, now).Bind(4, port);
  up->Bind(5, pick.trial_id);
  MEGABATCH_RETURN_IF_ERROR(up->Run());
  std::string placed = "lease " + std::to_string(pick.lease_id);
  if (pick.ranks > 1) {
    MEGABATCH_ASSIGN_OR_RETURN(
        CachedStatement clear,
        db_->Cached("DELETE FROM trial_ranks WHERE trial_id = ?"));
    clear->Bind(1, pick.trial_id);
    MEGABATCH_RETURN_IF_ERROR(clear->Run());
    MEGABATCH_ASSIGN_OR_RETURN(CachedStatement ins,
                               db_->Cached("INSERT INTO trial_ranks (trial_id, "
                                           "rank, lease_id, worker_id) VALUES "
                                           "(?, ?, ?, ?)"));
    placed += " as " + std::to_string(pick.ranks) + " ranks on workers " +
              std::to_string(workers[0]);
    for (size_t r = 1; r < workers.size(); ++r) {
      ins->Reset();
      ins->Bind(1, pick.trial_id).Bind(2, static_cast<int64_t>(r));
      ins->Bind(3, pick.lease_id).Bind(4, workers[r]);
      MEGABATCH_RETURN_IF_ERROR(ins->Run());
      placed += ", " + std::to_string(workers[r]);
    }
    placed += "; rendezvous " + host + ":" + std::to_string(port);
  }
  MEGABATCH_RETURN_IF_ERROR(AddEvent(pick.sweep->sweep_id, pick.trial_id,
                                     workers[0], "trial_leased", placed, now));
  // A lease can only move its sweep from queued to running.
  MEGABATCH_ASSIGN_OR_RETURN(CachedStatement started,
                             db_->Cached("UPDATE sweeps SET state = 'running' "
                                         "WHERE id = ? AND state = 'queued'"));
  started->Bind(1, pick.sweep->sweep_id);
  MEGABATCH_RETURN_IF_ERROR(started->Run());
  ++pick.sweep->running;
  MEGABATCH_ASSIGN_OR_RETURN(
      CachedStatement stored,
      db_->Cached(
          "SELECT coalesce(max(step), -1) FROM metrics WHERE trial_id = ? AND "
          "name = 'train_loss'"));
  stored->Bind(1, pick.trial_id);
  MEGABATCH_RETURN_IF_ERROR(stored->Step().status());
  const int64_t resume_max_step = stored->Int(0);

  std::vector<Lease> leases;
  for (int32_t r = 0; r < pick.ranks; ++r) {
    Lease lease;
    lease.trial_id = pick.trial_id;
    lease.lease_id = pick.lease_id;
    lease.sweep_id = pick.sweep->sweep_id;
    lease.rank = r;
    lease.world_size = pick.ranks;
    lease.resume_max_step = resume_max_step;
    if (pick.ranks == 1) {
      lease.config_json = pick.config_json;
    } else {
      nlohmann::json config = nlohmann::json::parse(pick.config_json);
      Rendezvous rendezvous;
      rendezvous.world_size = pick.ranks;
      rendezvous.rank = r;
      rendezvous.host = host;
      rendezvous.port = port;
      SetRendezvous(&config, rendezvous);
      lease.config_json = config.dump();
    }
    leases.push_back(std::move(lease));
  }
  return std::optional<std::vector<Lease>>(std::move(leases));
}

}  // namespace megabatch::store
