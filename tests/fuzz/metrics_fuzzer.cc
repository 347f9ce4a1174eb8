// libFuzzer target: metric batch handling. Each input is a serialized
// ReportMetricsRequest handed to the coordinator's WorkerService handler on a
// real SQLite store (a sweep, a worker and a live lease made once). A request
// with worker_id 0 is sent under the live lease, so most inputs reach the
// store. Beyond "no crash": no answer may be INTERNAL or UNKNOWN (an escaped
// exception or a store failure), and an accepted batch is acknowledged in
// full.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include "megabatch/v1/megabatch.pb.h"
#include "server/coordinator.h"

namespace {

using namespace megabatch;

struct World {
  std::unique_ptr<Coordinator> coordinator;
  int64_t worker_id = 0;
  v1::TrialLease lease;
};

std::string& WorldDir() {
  static std::string dir = (std::filesystem::temp_directory_path() /
                            ("megabatch-fuzz-" + std::to_string(getpid())))
                               .string();
  return dir;
}

World* MakeWorld() {
  auto* w = new World;
  const std::string& dir = WorldDir();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(WorldDir(), ec);
  });
  // The coordinator as it is wired for users, minus the rate limit (every
  // input should reach the store) and with leases that never expire.
  CoordinatorOptions options;
  options.listen = "127.0.0.1:0";
  options.db_path = dir + "/fuzz.db";
  options.metrics_listen = "";
  options.max_points_per_second = 0;
  options.scheduler.lease_timeout = std::chrono::hours(24);
  auto started = Coordinator::Start(options);
  if (!started.ok()) std::abort();
  w->coordinator = std::move(*started);
  store::SweepStore* store = w->coordinator->store();
  auto spec = spec::ParseSweepSpec(
      "name: fuzz\noptimizers: [{name: sgd}]\nbatch_sizes: [128, 256]\nbase: "
      "{lr: 0.1}\n"
      "early_stopping: {rule: asha, metric: val_accuracy, min_samples: 256}\n");
  if (!spec.ok() ||
      !store->CreateSweep(*spec, spec::ExpandSweep(*spec), "", 1).ok()) {
    std::abort();
  }
  w->worker_id = *store->RegisterWorker("fuzz", 2, 1);
  auto lease = store->LeaseNext(w->worker_id, 2);
  if (!lease.ok() || !lease->has_value()) std::abort();
  w->lease.set_trial_id((*lease)->trial_id);
  w->lease.set_lease_id((*lease)->lease_id);
  return w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = MakeWorld();
  v1::ReportMetricsRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (req.worker_id() == 0) {
    req.set_worker_id(world->worker_id);
    *req.mutable_lease() = world->lease;
  }
  grpc::ServerContext ctx;
  v1::ReportMetricsResponse resp;
  grpc::Status s =
      world->coordinator->worker_service()->ReportMetrics(&ctx, &req, &resp);
  if (s.error_code() == grpc::StatusCode::INTERNAL ||
      s.error_code() == grpc::StatusCode::UNKNOWN) {
    std::abort();
  }
  if (s.ok() && resp.accepted() != req.points_size()) std::abort();
  return 0;
}
