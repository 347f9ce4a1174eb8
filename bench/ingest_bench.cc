// Coordinator load benchmark, three figures:
//
//  1. Ingestion: N simulated workers, each holding one leased trial, send
//     ReportMetrics batches over loopback gRPC to a real coordinator for a
//     fixed time; points/s accepted, and a count of the rows in SQLite
//     afterwards to show every acknowledged point was stored. In the same
//     run, the same kind of load through Optuna 3.1's SQLite storage
//     (bench/optuna_ingest.py, one trial.report per value) as the baseline.
//  2. Dispatch latency: 200 simulated workers, each on its own connection,
//     long-poll an idle coordinator; a 2,000-trial sweep is submitted and
//     they lease until it is done. The first lease of each worker (all 200
//     woken by the submission at once), the later LeaseTrial round trips,
//     and as a floor for this machine 200 simultaneous heartbeats. Once with
//     each trial "training" for about a second (a lease request every 5 ms
//     on average, far above a real study's rate), once finishing at once
//     (the coordinator saturated: its lease throughput).
//  3. A 10,000-trial sweep: submit time and the coordinator process's
//     resident memory before and after (the coordinator runs in this
//     process, the clients too).
//  4. A fleet: 1,000 simulated workers that register, long-poll, train,
//     report, heartbeat and finish as worker daemons do, against a
//     coordinator process of its own (bench/fleet_figure.cc): dispatch and
//     heartbeat latency, ingest rate, the coordinator's CPU and memory, and
//     the size of ListWorkers and WatchSweep messages.
// Each figure has its own coordinator and database.
//
// Usage: build/bench/ingest_bench [--workers N] [--seconds S] [--batch B]
//        [--dispatch-workers W] [--skip-optuna] [--fleet-workers F (0: no
//        fleet)] [--fleet-seconds S] [--fleet-no-watch] [--only-fleet]
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "bench/fleet_figure.h"
#include "megabatch/v1/megabatch.grpc.pb.h"
#include "server/coordinator.h"
#include "server/store/db.h"

namespace {

using megabatch::bench::Clock;
using megabatch::bench::Percentile;
using megabatch::bench::Seconds;
using megabatch::v1::SweepService;
using megabatch::v1::WorkerService;

long RssKib() {
  return static_cast<long>(megabatch::bench::StatusField(getpid(), "VmRSS"));
}

int Flag(int argc, char** argv, const std::string& name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == name) return std::atoi(argv[i + 1]);
  }
  return fallback;
}

bool HasFlag(int argc, char** argv, const std::string& name) {
  for (int i = 1; i < argc; ++i) {
    if (argv[i] == name) return true;
  }
  return false;
}

std::string Spec(const std::string& name, int trials) {
  // trials = 1 optimizer x up to 100 lr multipliers x seeds.
  const int per_seed = std::min(trials, 100);
  std::string multipliers, seeds;
  for (int i = 0; i < per_seed; ++i) {
    multipliers += (i ? ", " : "") + std::to_string(1.0 + i * 1e-3);
  }
  for (int i = 0; i < trials / per_seed; ++i)
    seeds += (i ? ", " : "") + std::to_string(i);
  return "name: " + name +
         "\noptimizers: [{name: sgd}]\nbatch_sizes: [128]\n"
         "base: {lr: 0.1}\nlr_multipliers: [" +
         multipliers + "]\nseeds: [" + seeds + "]\n";
}

std::string Spec10k() {
  // 4 optimizers x 10 batch sizes x 25 multipliers x 10 seeds.
  std::string multipliers, seeds;
  for (int i = 0; i < 25; ++i)
    multipliers += (i ? ", " : "") + std::to_string(0.5 + i * 0.1);
  for (int i = 0; i < 10; ++i) seeds += (i ? ", " : "") + std::to_string(i);
  return "name: ten-thousand\noptimizers: [{name: sgd}, {name: adamw}, {name: "
         "lamb}, "
         "{name: lars}]\nbatch_sizes: [128, 256, 512, 1024, 2048, 4096, 8192, "
         "16384, "
         "32768, 55000]\nbase: {lr: 0.01}\nlr_scaling: sqrt\nlr_multipliers: "
         "[" +
         multipliers + "]\nseeds: [" + seeds + "]\n";
}

int64_t Submit(SweepService::Stub& sweeps, const std::string& spec) {
  grpc::ClientContext ctx;
  megabatch::v1::SubmitSweepRequest req;
  req.set_spec(spec);
  megabatch::v1::SubmitSweepResponse resp;
  grpc::Status s = sweeps.SubmitSweep(&ctx, req, &resp);
  if (!s.ok()) {
    std::fprintf(stderr, "submit: %s\n", s.error_message().c_str());
    std::exit(1);
  }
  return resp.sweep_id();
}

struct SimWorker {
  int64_t id = 0;
  megabatch::v1::TrialLease lease;
};

SimWorker RegisterAndLease(WorkerService::Stub& stub, const std::string& name) {
  SimWorker w;
  grpc::ClientContext ctx;
  megabatch::v1::RegisterWorkerRequest req;
  req.set_name(name);
  req.set_slots(1);
  megabatch::v1::RegisterWorkerResponse resp;
  if (!stub.RegisterWorker(&ctx, req, &resp).ok()) std::exit(1);
  w.id = resp.worker_id();
  grpc::ClientContext lease_ctx;
  megabatch::v1::LeaseTrialRequest lease_req;
  lease_req.set_worker_id(w.id);
  lease_req.set_wait_ms(5000);
  megabatch::v1::LeaseTrialResponse lease_resp;
  if (!stub.LeaseTrial(&lease_ctx, lease_req, &lease_resp).ok() ||
      !lease_resp.has_lease()) {
    std::fprintf(stderr, "%s got no lease\n", name.c_str());
    std::exit(1);
  }
  w.lease = lease_resp.lease();
  return w;
}

void Heartbeat(WorkerService::Stub& stub, const SimWorker& w) {
  grpc::ClientContext ctx;
  megabatch::v1::HeartbeatRequest req;
  req.set_worker_id(w.id);
  *req.add_running() = w.lease;
  megabatch::v1::HeartbeatResponse resp;
  stub.Heartbeat(&ctx, req, &resp);
}

// Figure 1: points per second through ReportMetrics into SQLite.
double IngestPointsPerSecond(const std::string& address,
                             const std::string& db_path, int workers,
                             int seconds, int batch) {
  auto channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto sweeps = SweepService::NewStub(channel);
  int64_t sweep = Submit(*sweeps, Spec("ingest", workers));
  std::atomic<int64_t> accepted{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  const auto deadline = Clock::now() + std::chrono::seconds(seconds);
  const auto start = Clock::now();
  for (int i = 0; i < workers; ++i) {
    threads.emplace_back([&, i] {
      // One channel per simulated worker, as separate worker processes have.
      grpc::ChannelArguments args;
      args.SetInt("grpc.use_local_subchannel_pool", 1);
      auto stub = WorkerService::NewStub(grpc::CreateCustomChannel(
          address, grpc::InsecureChannelCredentials(), args));
      SimWorker w = RegisterAndLease(*stub, "ingest-" + std::to_string(i));
      const char* names[] = {"train_loss", "lr", "samples_per_second",
                             "grad_norm"};
      int64_t step = 0;
      auto last_heartbeat = Clock::now();
      while (Clock::now() < deadline) {
        megabatch::v1::ReportMetricsRequest req;
        req.set_worker_id(w.id);
        *req.mutable_lease() = w.lease;
        for (int k = 0; k < batch / 4; ++k) {
          ++step;
          for (const char* name : names) {
            auto* p = req.add_points();
            p->set_name(name);
            p->set_step(step);
            p->set_value(1.0 / static_cast<double>(step));
          }
        }
        grpc::ClientContext ctx;
        megabatch::v1::ReportMetricsResponse resp;
        grpc::Status s = stub->ReportMetrics(&ctx, req, &resp);
        if (!s.ok()) {
          std::fprintf(stderr, "report: %s\n", s.error_message().c_str());
          failed = true;
          return;
        }
        accepted += resp.accepted();
        if (Clock::now() - last_heartbeat > std::chrono::seconds(1)) {
          Heartbeat(*stub, w);
          last_heartbeat = Clock::now();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed = Seconds(Clock::now() - start);
  if (failed) std::exit(1);
  auto db = megabatch::store::Db::OpenReadOnly(db_path);
  auto q = (*db)->Prepare(
      "SELECT count(*) FROM metrics m JOIN trials t ON t.id = m.trial_id WHERE "
      "t.sweep_id = ?");
  q->Bind(1, sweep);
  (void)q->Step();
  const int64_t stored = q->Int(0);
  std::printf(
      "ingestion: %d workers, batches of %d points, %.1f s: %lld points "
      "accepted, "
      "%lld rows in SQLite%s\n",
      workers, batch, elapsed, static_cast<long long>(accepted.load()),
      static_cast<long long>(stored),
      stored == accepted.load() ? " (all stored)" : " (MISMATCH)");
  return static_cast<double>(accepted.load()) / elapsed;
}

// A one-shot start line: ArriveAndWait() returns once n threads arrived.
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void ArriveAndWait() {
    std::unique_lock<std::mutex> lock(mu_);
    if (++arrived_ == n_) cv_.notify_all();
    cv_.wait(lock, [&] { return arrived_ >= n_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  const int n_;
};

// Figure 2: trial dispatch with `workers` simulated workers, each on its own
// connection as worker processes are. They register and long-poll an idle
// coordinator; then a sweep of `trials` is submitted, and every worker leases,
// "trains" for `train_ms` (uniform in [train_ms/2, 3·train_ms/2]; 0: not at
// all, which saturates the coordinator), finishes and leases again until the
// sweep is done. Latency of a worker's first lease: from the submission's
// answer (its trials are visible then) to the lease in the worker's hands,
// all workers at once; of the others: the LeaseTrial round trip. Before the
// sweep, all workers heartbeat at the same instant: the cost of 200
// simultaneous one-statement RPCs on this machine, a floor for the burst.
void DispatchLatency(const std::string& address, int workers, int trials,
                     int train_ms) {
  auto sweeps = SweepService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  std::mutex mu;
  std::vector<double> heartbeats, first, later;
  std::atomic<int> remaining{trials};
  std::atomic<int> polling{0};
  Clock::time_point submitted{};
  Barrier registered(workers + 1), heartbeat_line(workers);
  std::vector<std::thread> threads;
  for (int i = 0; i < workers; ++i) {
    threads.emplace_back([&, i] {
      // minstd_rand's first draws from seeds 1..200 are nearly equal, which
      // would make every worker's first trial last the same time.
      std::seed_seq seed{i};
      std::mt19937 rng(seed);
      std::uniform_int_distribution<int> train(train_ms / 2, train_ms * 3 / 2);
      grpc::ChannelArguments args;
      args.SetInt("grpc.use_local_subchannel_pool", 1);
      auto stub = WorkerService::NewStub(grpc::CreateCustomChannel(
          address, grpc::InsecureChannelCredentials(), args));
      grpc::ClientContext ctx;
      megabatch::v1::RegisterWorkerRequest req;
      req.set_name("dispatch-" + std::to_string(i));
      req.set_slots(1);
      megabatch::v1::RegisterWorkerResponse resp;
      if (!stub->RegisterWorker(&ctx, req, &resp).ok()) std::exit(1);
      heartbeat_line.ArriveAndWait();
      {
        auto start = Clock::now();
        grpc::ClientContext hb_ctx;
        megabatch::v1::HeartbeatRequest hb;
        hb.set_worker_id(resp.worker_id());
        megabatch::v1::HeartbeatResponse hb_resp;
        if (!stub->Heartbeat(&hb_ctx, hb, &hb_resp).ok()) std::exit(1);
        std::lock_guard<std::mutex> lock(mu);
        heartbeats.push_back(Seconds(Clock::now() - start));
      }
      registered.ArriveAndWait();
      bool first_lease = true;
      while (remaining > 0) {
        grpc::ClientContext lease_ctx;
        megabatch::v1::LeaseTrialRequest lease_req;
        lease_req.set_worker_id(resp.worker_id());
        lease_req.set_wait_ms(first_lease ? 10000 : 200);
        megabatch::v1::LeaseTrialResponse lease_resp;
        if (first_lease) ++polling;
        auto start = Clock::now();
        grpc::Status s = stub->LeaseTrial(&lease_ctx, lease_req, &lease_resp);
        const auto now = Clock::now();
        if (!s.ok() || !lease_resp.has_lease()) continue;
        {
          std::lock_guard<std::mutex> lock(mu);
          if (first_lease) {
            first.push_back(std::max(0.0, Seconds(now - submitted)));
          } else {
            later.push_back(Seconds(now - start));
          }
          first_lease = false;
        }
        --remaining;
        if (train_ms > 0)
          std::this_thread::sleep_for(std::chrono::milliseconds(train(rng)));
        grpc::ClientContext finish_ctx;
        megabatch::v1::FinishTrialRequest finish;
        finish.set_worker_id(resp.worker_id());
        *finish.mutable_lease() = lease_resp.lease();
        finish.set_outcome(megabatch::v1::TRIAL_STATE_COMPLETED);
        megabatch::v1::FinishTrialResponse finish_resp;
        stub->FinishTrial(&finish_ctx, finish, &finish_resp);
      }
    });
  }
  registered.ArriveAndWait();
  // The workers are about to send their long polls; give the requests time
  // to reach the coordinator (a benchmark's settling time, not a test's).
  while (polling < workers) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto start = Clock::now();
  {
    // `submitted` is read by the workers only after a lease, which exists
    // only after this call's transaction; the lock orders the write before.
    std::lock_guard<std::mutex> lock(mu);
    Submit(*sweeps, Spec("dispatch", trials));
    submitted = Clock::now();
  }
  for (auto& t : threads) t.join();
  const double elapsed = Seconds(Clock::now() - start);
  std::vector<double> all = first;
  all.insert(all.end(), later.begin(), later.end());
  std::printf(
      "dispatch, %d workers, trials of %s: %zu leases in %.1f s (%.0f/s); "
      "p50 %.2f ms, p99 %.2f ms; the first lease of each worker, all woken by "
      "the submission at once: p50 %.2f ms, p99 %.2f ms; the others: p50 %.2f "
      "ms, "
      "p99 %.2f ms; floor, %d heartbeats at once: p50 %.2f ms, p99 %.2f ms\n",
      workers,
      train_ms > 0 ? (std::to_string(train_ms) + " ms").c_str()
                   : "0 ms (saturated)",
      all.size(), elapsed, all.size() / elapsed, 1e3 * Percentile(all, 0.5),
      1e3 * Percentile(all, 0.99), 1e3 * Percentile(first, 0.5),
      1e3 * Percentile(first, 0.99), 1e3 * Percentile(later, 0.5),
      1e3 * Percentile(later, 0.99), workers, 1e3 * Percentile(heartbeats, 0.5),
      1e3 * Percentile(heartbeats, 0.99));
}

// A coordinator in this process on a fresh database in `dir`.
std::unique_ptr<megabatch::Coordinator> StartCoordinator(
    const std::string& dir) {
  std::filesystem::create_directories(dir);
  megabatch::CoordinatorOptions options;
  options.listen = "127.0.0.1:0";
  options.db_path = dir + "/bench.db";
  options.metrics_listen = "";
  options.scheduler.lease_timeout = std::chrono::seconds(60);
  auto coordinator = megabatch::Coordinator::Start(options);
  if (!coordinator.ok()) {
    std::fprintf(stderr, "%s\n", coordinator.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*coordinator);
}

std::string Address(const megabatch::Coordinator& c) {
  return "127.0.0.1:" + std::to_string(c.port());
}

}  // namespace

int main(int argc, char** argv) {
  // The in-process coordinators' per-trial log lines would drown the figures.
  spdlog::set_level(spdlog::level::warn);
  const int workers = Flag(argc, argv, "--workers", 8);
  const int seconds = Flag(argc, argv, "--seconds", 10);
  const int batch = Flag(argc, argv, "--batch", 2000);
  const int dispatch_workers = Flag(argc, argv, "--dispatch-workers", 200);
  std::string dir = std::filesystem::temp_directory_path() /
                    ("megabatch-ingest-bench-" + std::to_string(getpid()));
  const long rss_start = RssKib();
  const int fleet_workers = Flag(argc, argv, "--fleet-workers", 1000);
  bool fleet_ok = true;
  auto fleet = [&] {
    if (fleet_workers <= 0) return;
    megabatch::bench::FleetOptions o;
    o.coordinator_bin = MEGABATCH_COORDINATOR_BIN;
    o.dir = dir + "/fleet";
    std::filesystem::create_directories(o.dir);
    o.workers = fleet_workers;
    o.seconds = Flag(argc, argv, "--fleet-seconds", 60);
    o.spec = Spec("fleet", 10000);
    o.watch = !HasFlag(argc, argv, "--fleet-no-watch");
    fleet_ok = megabatch::bench::RunFleet(o);
  };
  if (HasFlag(argc, argv, "--only-fleet")) {
    fleet();
    std::filesystem::remove_all(dir);
    return fleet_ok ? 0 : 1;
  }

  // Each figure on its own coordinator and database, so that one's backlog
  // (the ingestion's write-ahead log) does not weigh on the next.
  {
    auto coordinator = StartCoordinator(dir + "/ingest");
    const double ours =
        IngestPointsPerSecond(Address(*coordinator), dir + "/ingest/bench.db",
                              workers, seconds, batch);
    std::printf("megabatch: %.0f points/s (goal >= 100000)\n", ours);
    if (!HasFlag(argc, argv, "--skip-optuna")) {
      std::string script =
          std::string(MEGABATCH_BENCH_DIR) + "/optuna_ingest.py";
      std::string cmd = "/usr/bin/python3 " + script + " --storage sqlite:///" +
                        dir + "/optuna.db --workers " +
                        std::to_string(workers) + " --seconds " +
                        std::to_string(seconds);
      FILE* p = popen(cmd.c_str(), "r");
      double optuna = 0;
      if (p == nullptr || std::fscanf(p, "%lf", &optuna) != 1 ||
          pclose(p) != 0 || optuna <= 0) {
        std::printf("optuna baseline failed (is python3-optuna installed?)\n");
      } else {
        std::printf(
            "optuna 3.1 sqlite (trial.report per value): %.0f points/s\n",
            optuna);
        std::printf("megabatch / optuna: %.0fx\n", ours / optuna);
      }
    }
  }
  for (int train_ms : {1000, 0}) {
    auto coordinator =
        StartCoordinator(dir + "/dispatch-" + std::to_string(train_ms));
    DispatchLatency(Address(*coordinator), dispatch_workers, 2000, train_ms);
  }

  auto coordinator = StartCoordinator(dir + "/big");
  auto sweeps = SweepService::NewStub(grpc::CreateChannel(
      Address(*coordinator), grpc::InsecureChannelCredentials()));
  const long rss_before = RssKib();
  auto start = Clock::now();
  const int64_t big = Submit(*sweeps, Spec10k());
  const double submit_s = Seconds(Clock::now() - start);
  start = Clock::now();
  {
    // Every page of it, as a client lists a sweep.
    int listed = 0;
    std::string token;
    do {
      grpc::ClientContext ctx;
      megabatch::v1::ListTrialsRequest req;
      req.set_sweep_id(big);
      req.set_page_size(1000);
      req.set_page_token(token);
      megabatch::v1::ListTrialsResponse resp;
      grpc::Status s = sweeps->ListTrials(&ctx, req, &resp);
      if (!s.ok()) {
        std::fprintf(stderr, "ListTrials: %s\n", s.error_message().c_str());
        break;
      }
      listed += resp.trials_size();
      token = resp.next_page_token();
    } while (!token.empty());
    if (listed != 10000)
      std::fprintf(stderr, "ListTrials: %d trials\n", listed);
  }
  const double list_s = Seconds(Clock::now() - start);
  std::printf(
      "10,000-trial sweep: submit %.2f s, ListTrials %.2f s; process RSS %ld "
      "MiB "
      "before it, %ld MiB after (%ld MiB at start)\n",
      submit_s, list_s, rss_before / 1024, RssKib() / 1024, rss_start / 1024);
  coordinator.reset();
  fleet();
  std::filesystem::remove_all(dir);
  return fleet_ok ? 0 : 1;
}
