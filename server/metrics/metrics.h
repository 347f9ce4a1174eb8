// The coordinator's Prometheus metrics, served as text on /metrics.
//
// Event metrics (RPCs, dispatch latency, store writes, points ingested) are
// counters and histograms updated as things happen. State metrics (workers,
// slots, sweeps, trials, queue depth, heartbeat age) and the live series of
// running trials are computed at scrape time from the database on a
// read-only connection, so they are never stale: a trial's series disappear
// at the first scrape after it stops running. docs/metrics-and-dashboards.md
// lists every series.
#ifndef MEGABATCH_SERVER_METRICS_METRICS_H_
#define MEGABATCH_SERVER_METRICS_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/store/read_only.h"
#include "server/store/sweep_store.h"

namespace megabatch::metrics {

// One GPU of a worker, as its heartbeat reports it.
struct GpuSample {
  int32_t index = 0;
  double utilization_ratio = 0;  // 0..1
  double memory_used_bytes = 0;
  double memory_total_bytes = 0;
};

// Thread-safe. `results` must outlive the object.
inline constexpr int kMetricsThreads = 8;
inline constexpr std::chrono::milliseconds kMetricsRequestTimeout{5000};

class CoordinatorMetrics {
 public:
  explicit CoordinatorMetrics(const store::ReadOnlyDb* results);
  ~CoordinatorMetrics();
  CoordinatorMetrics(const CoordinatorMetrics&) = delete;
  CoordinatorMetrics& operator=(const CoordinatorMetrics&) = delete;

  // Serves /metrics on `listen` ("host:port"; port 0 picks a free one) with
  // kMetricsThreads threads; a connection that sends no request within
  // kMetricsRequestTimeout is closed. UNAVAILABLE naming the address if it
  // cannot listen.
  // `basic_auth` "user:password": requests must carry it (HTTP basic auth);
  // empty: open.
  Status Serve(const std::string& listen, const std::string& basic_auth = "");
  // The port /metrics is served on; 0 when not serving.
  int port() const;

  void ObserveRpc(const std::string& method, StatusCode code, double seconds);
  // From the moment a lease request and a queued trial meet to the lease.
  void ObserveDispatch(double seconds);
  // `op` is one of the writes services.cc times: append_metrics,
  // finish_trial, heartbeat.
  void ObserveStoreWrite(const std::string& op, double seconds);
  // Points accepted for a trial: counted, and the latest value of each live
  // metric kept for its series.
  void RecordTrialPoints(int64_t trial_id,
                         const std::vector<store::MetricPoint>& points);
  void RecordWorkerGpus(int64_t worker_id, std::vector<GpuSample> gpus);
  // A periodic backup (--backup-every) ended; `ok`: it was written.
  void RecordBackup(bool ok, double unix_seconds);

  // What /metrics serves, in the text format.
  std::string Scrape() const;

 private:
  class Live;

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<Live> live_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Counter>* rpcs_;
  prometheus::Family<prometheus::Histogram>* rpc_seconds_;
  prometheus::Histogram* dispatch_seconds_;
  prometheus::Family<prometheus::Histogram>* store_write_seconds_;
  prometheus::Counter* points_ingested_;
  prometheus::Family<prometheus::Counter>* backups_;
  prometheus::Gauge* last_backup_;
};

}  // namespace megabatch::metrics

#endif  // MEGABATCH_SERVER_METRICS_METRICS_H_
