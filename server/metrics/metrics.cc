#include "server/metrics/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/text_serializer.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <set>

#include "common/metric_catalog.h"
#include "common/mutex.h"

namespace megabatch::metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

// The trainer's metrics that get a live series while a trial runs (those
// common/metric_catalog.h marks live), with their help text.
const std::map<std::string, std::string>& LiveMetrics() {
  static const auto* names = [] {
    auto* out = new std::map<std::string, std::string>;
    for (const MetricInfo& m : kMetricCatalog) {
      if (m.live)
        (*out)[std::string(m.name)] = "latest " + std::string(m.meaning);
    }
    return out;
  }();
  return *names;
}

MetricFamily Gauges(std::string name, std::string help) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = MetricType::Gauge;
  return f;
}

void Add(MetricFamily& f, Labels labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  f.metric.push_back(std::move(m));
}

std::string Short(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

// The names of a store state table (store::kTrialStateNames, ...).
template <typename Table>
std::vector<std::string> StateNames(const Table& table) {
  std::vector<std::string> names;
  for (const auto& [state, name] : table) names.emplace_back(name);
  return names;
}

// Counts per state from `sql` (state, count), every state present.
Status StateGauges(store::Db& db, const std::string& sql, MetricFamily* family,
                   const std::vector<std::string>& states) {
  std::map<std::string, double> counts;
  for (const std::string& state : states) counts[state] = 0;
  auto q = db.Prepare(sql);
  if (!q.ok()) return q.status();
  MEGABATCH_RETURN_IF_ERROR(store::ForEachRow(
      *q, [&](store::Statement& row) { counts[row.Text(0)] = row.Double(1); }));
  for (const auto& [state, count] : counts)
    Add(*family, {{"state", state}}, count);
  return Status();
}

const std::vector<double>& LatencyBuckets() {
  static const auto* buckets =
      new std::vector<double>{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                              0.1,    0.25,  0.5,    1,     2.5,  10,    60};
  return *buckets;
}

}  // namespace

class CoordinatorMetrics::Live : public prometheus::Collectable {
 public:
  explicit Live(const store::ReadOnlyDb* results) : results_(results) {}

  void RecordTrial(int64_t trial_id,
                   const std::vector<store::MetricPoint>& points) {
    MutexLock lock(&mu_);
    // Points arrive in step order; keep each name's value at its latest step.
    auto& latest = trials_[trial_id];
    for (const auto& p : points) {
      if (LiveMetrics().count(p.name) == 0) continue;
      auto it = latest.find(p.name);
      if (it == latest.end() || it->second.first <= p.step)
        latest[p.name] = {p.step, p.value};
    }
  }

  void RecordGpus(int64_t worker_id, std::vector<GpuSample> gpus) {
    MutexLock lock(&mu_);
    if (gpus.empty()) {
      gpus_.erase(worker_id);
    } else {
      gpus_[worker_id] = std::move(gpus);
    }
  }

  std::vector<MetricFamily> Collect() const override {
    std::vector<MetricFamily> families;
    Status s = CollectInto(&families);
    MetricFamily up =
        Gauges("megabatch_scrape_database_ok",
               "1 if the state gauges could be read from the database");
    Add(up, {}, s.ok() ? 1 : 0);
    families.push_back(std::move(up));
    return families;
  }

 private:
  Status CollectInto(std::vector<MetricFamily>* out) const {
    auto db = results_->Connect();
    if (!db.ok()) return db.status();
    store::Db& d = **db;
    // One read transaction: every gauge from the same snapshot.
    MEGABATCH_RETURN_IF_ERROR(d.Exec("BEGIN"));

    MetricFamily workers =
        Gauges("megabatch_workers", "registered workers by state");
    MEGABATCH_RETURN_IF_ERROR(
        StateGauges(d, "SELECT state, count(*) FROM workers GROUP BY state",
                    &workers, {"alive", "lost"}));
    out->push_back(std::move(workers));

    auto slots_q = d.Prepare(
        "SELECT (SELECT coalesce(sum(slots), 0) FROM workers WHERE state = "
        "'alive'), "
        "(SELECT count(*) FROM holdings h JOIN workers w ON w.id = h.worker_id "
        "WHERE w.state = 'alive')");
    if (!slots_q.ok()) return slots_q.status();
    auto row = slots_q->Step();
    if (!row.ok()) return row.status();
    double total = slots_q->Double(0), busy = slots_q->Double(1);
    MetricFamily slots =
        Gauges("megabatch_slots", "trial slots of alive workers, busy or free");
    Add(slots, {{"state", "busy"}}, busy);
    Add(slots, {{"state", "free"}}, std::max(0.0, total - busy));
    out->push_back(std::move(slots));

    MetricFamily sweeps = Gauges("megabatch_sweeps", "sweeps by state");
    MEGABATCH_RETURN_IF_ERROR(
        StateGauges(d, "SELECT state, count(*) FROM sweeps GROUP BY state",
                    &sweeps, StateNames(store::kSweepStateNames)));
    out->push_back(std::move(sweeps));

    MetricFamily trials = Gauges("megabatch_trials", "trials by state");
    MEGABATCH_RETURN_IF_ERROR(
        StateGauges(d, "SELECT state, count(*) FROM trials GROUP BY state",
                    &trials, StateNames(store::kTrialStateNames)));
    double queued = 0;
    for (const auto& m : trials.metric) {
      if (m.label[0].value == "queued") queued = m.gauge.value;
    }
    out->push_back(std::move(trials));
    MetricFamily queue =
        Gauges("megabatch_queue_depth", "trials waiting for a slot");
    Add(queue, {}, queued);
    out->push_back(std::move(queue));

    MetricFamily age =
        Gauges("megabatch_worker_heartbeat_age_seconds",
               "seconds since each alive worker's last heartbeat");
    std::map<int64_t, std::string> alive;
    const double now = std::chrono::duration<double>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
    auto last_q = d.Prepare(
        "SELECT id, name, last_heartbeat_at FROM workers WHERE state = "
        "'alive'");
    if (!last_q.ok()) return last_q.status();
    MEGABATCH_RETURN_IF_ERROR(
        store::ForEachRow(*last_q, [&](store::Statement& w) {
          alive[w.Int(0)] = w.Text(1);
          Add(age,
              {{"worker", w.Text(1)}, {"worker_id", std::to_string(w.Int(0))}},
              std::max(0.0, now - w.Double(2)));
        }));
    out->push_back(std::move(age));

    MutexLock lock(&mu_);
    MetricFamily util =
        Gauges("megabatch_worker_gpu_utilization_ratio",
               "GPU utilisation (0..1) as the worker's NVML reports it");
    MetricFamily used =
        Gauges("megabatch_worker_gpu_memory_used_bytes", "GPU memory in use");
    MetricFamily total_mem =
        Gauges("megabatch_worker_gpu_memory_total_bytes", "GPU memory");
    for (auto it = gpus_.begin(); it != gpus_.end();) {
      auto name = alive.find(it->first);
      if (name == alive.end()) {
        it = gpus_.erase(it);
        continue;
      }
      for (const auto& g : it->second) {
        Labels labels = {{"worker", name->second},
                         {"worker_id", std::to_string(it->first)},
                         {"gpu", std::to_string(g.index)}};
        Add(util, labels, g.utilization_ratio);
        Add(used, labels, g.memory_used_bytes);
        Add(total_mem, labels, g.memory_total_bytes);
      }
      ++it;
    }
    out->push_back(std::move(util));
    out->push_back(std::move(used));
    out->push_back(std::move(total_mem));

    // Running trials: their info series and live values. Anything else the
    // map still holds has ended and is dropped.
    MetricFamily info = Gauges("megabatch_trial_info",
                               "1 for each running trial; join on sweep and "
                               "trial for its hyperparameters");
    std::map<std::string, MetricFamily> live;
    for (const auto& [name, help] : LiveMetrics()) {
      live.emplace(name, Gauges("megabatch_trial_" + name,
                                help + ", per running trial"));
    }
    std::set<int64_t> running;
    auto running_q = d.Prepare(
        "SELECT id, sweep_id, optimizer, batch_size, lr FROM trials WHERE "
        "state = 'running'");
    if (!running_q.ok()) return running_q.status();
    MEGABATCH_RETURN_IF_ERROR(
        store::ForEachRow(*running_q, [&](store::Statement& t) {
          const int64_t id = t.Int(0);
          running.insert(id);
          Labels ids = {{"sweep", std::to_string(t.Int(1))},
                        {"trial", std::to_string(id)}};
          Labels labels = ids;
          labels.push_back({"optimizer", t.Text(2)});
          labels.push_back({"batch_size", std::to_string(t.Int(3))});
          labels.push_back({"lr", Short(t.Double(4))});
          Add(info, labels, 1);
          mu_.AssertHeld();  // held by the enclosing scope; the analysis skips
                             // lambdas
          auto values = trials_.find(id);
          if (values == trials_.end()) return;
          for (const auto& [name, step_value] : values->second) {
            Add(live.at(name), ids, step_value.second);
          }
        }));
    for (auto it = trials_.begin(); it != trials_.end();) {
      it = running.count(it->first) ? std::next(it) : trials_.erase(it);
    }
    out->push_back(std::move(info));
    for (auto& [name, family] : live) out->push_back(std::move(family));
    return Status();
  }

  const store::ReadOnlyDb* const results_;
  mutable Mutex mu_;
  // trial id -> metric name -> (step, value)
  mutable std::map<int64_t, std::map<std::string, std::pair<int64_t, double>>>
      trials_ GUARDED_BY(mu_);
  mutable std::map<int64_t, std::vector<GpuSample>> gpus_ GUARDED_BY(mu_);
};

CoordinatorMetrics::CoordinatorMetrics(const store::ReadOnlyDb* results)
    : registry_(std::make_shared<prometheus::Registry>()),
      live_(std::make_shared<Live>(results)) {
  rpcs_ = &prometheus::BuildCounter()
               .Name("megabatch_rpcs_total")
               .Help("gRPC calls handled, by method and status code")
               .Register(*registry_);
  rpc_seconds_ =
      &prometheus::BuildHistogram()
           .Name("megabatch_rpc_duration_seconds")
           .Help("time to handle a gRPC call (streams: their whole life)")
           .Register(*registry_);
  dispatch_seconds_ =
      &prometheus::BuildHistogram()
           .Name("megabatch_trial_dispatch_latency_seconds")
           .Help("from a lease request meeting a queued trial to the lease")
           .Register(*registry_)
           .Add({}, LatencyBuckets());
  store_write_seconds_ = &prometheus::BuildHistogram()
                              .Name("megabatch_store_write_duration_seconds")
                              .Help("time of one database write, by operation")
                              .Register(*registry_);
  points_ingested_ =
      &prometheus::BuildCounter()
           .Name("megabatch_metric_points_ingested_total")
           .Help("metric points accepted from workers and stored")
           .Register(*registry_)
           .Add({});
  backups_ = &prometheus::BuildCounter()
                  .Name("megabatch_backups_total")
                  .Help("periodic database backups (--backup-every), by result")
                  .Register(*registry_);
  last_backup_ =
      &prometheus::BuildGauge()
           .Name("megabatch_last_backup_timestamp_seconds")
           .Help(
               "when the last periodic backup was written (Unix time; 0: "
               "none yet)")
           .Register(*registry_)
           .Add({});
}

CoordinatorMetrics::~CoordinatorMetrics() = default;

Status CoordinatorMetrics::Serve(const std::string& listen,
                                 const std::string& basic_auth) {
  try {
    // Threads enough for several scrapers and a browser, and a read
    // timeout, so that idle connections (one thread each) are dropped
    // instead of starving the scrapes (two threads by default, none).
    exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", listen, "num_threads",
        std::to_string(kMetricsThreads), "request_timeout_ms",
        std::to_string(kMetricsRequestTimeout.count())});
  } catch (const std::exception& e) {
    return UnavailableError("metrics: cannot listen on " + listen + ": " +
                            e.what());
  }
  if (!basic_auth.empty()) {
    exposer_->RegisterAuth(
        [basic_auth](const std::string& user, const std::string& password) {
          // Compares every byte whatever the first difference.
          const std::string given = user + ":" + password;
          unsigned char diff = given.size() != basic_auth.size();
          for (size_t i = 0; i < given.size(); ++i) {
            diff |= static_cast<unsigned char>(
                given[i] ^ basic_auth[i % basic_auth.size()]);
          }
          return diff == 0;
        },
        "megabatch");
  }
  exposer_->RegisterCollectable(registry_);
  exposer_->RegisterCollectable(live_);
  return Status();
}

int CoordinatorMetrics::port() const {
  if (!exposer_) return 0;
  auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports[0];
}

void CoordinatorMetrics::ObserveRpc(const std::string& method, StatusCode code,
                                    double seconds) {
  rpcs_->Add({{"method", method}, {"code", StatusCodeName(code)}}).Increment();
  rpc_seconds_->Add({{"method", method}}, LatencyBuckets()).Observe(seconds);
}

void CoordinatorMetrics::ObserveDispatch(double seconds) {
  dispatch_seconds_->Observe(seconds);
}

void CoordinatorMetrics::ObserveStoreWrite(const std::string& op,
                                           double seconds) {
  store_write_seconds_->Add({{"op", op}}, LatencyBuckets()).Observe(seconds);
}

void CoordinatorMetrics::RecordTrialPoints(
    int64_t trial_id, const std::vector<store::MetricPoint>& points) {
  points_ingested_->Increment(static_cast<double>(points.size()));
  live_->RecordTrial(trial_id, points);
}

void CoordinatorMetrics::RecordBackup(bool ok, double unix_seconds) {
  backups_->Add({{"result", ok ? "ok" : "error"}}).Increment();
  if (ok) last_backup_->Set(unix_seconds);
}

void CoordinatorMetrics::RecordWorkerGpus(int64_t worker_id,
                                          std::vector<GpuSample> gpus) {
  live_->RecordGpus(worker_id, std::move(gpus));
}

std::string CoordinatorMetrics::Scrape() const {
  std::vector<MetricFamily> families = registry_->Collect();
  for (auto& f : live_->Collect()) families.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace megabatch::metrics
