// A fleet of simulated workers against a real coordinator process.
//
// The coordinator runs as its own process (the real megabatch-coordinator
// binary, started with the file-descriptor soft limit at 1,024, systemd's
// default), so that its CPU time and memory are its own. Every simulated
// worker is a thread with its own connection, behaving as a worker daemon
// does: it registers, long-polls for a trial (1 s), "trains" it for 5 to
// 15 s while it reports a batch of metric points once a second (each
// report carrying its heartbeat once half a second has passed since the
// last; an idle worker heartbeats on its own every 1.5 s), finishes it, and
// polls again. The sweep holds
// more trials than the window can use, so no worker waits for work.
//
// Printed: the first lease of every worker, all woken by the submission at
// once; the dispatch latency after that (LeaseTrial round trips that got a
// trial); heartbeat and ReportMetrics round trips; points/s accepted, and
// every accepted point counted in SQLite afterwards; the coordinator's CPU
// (cores busy over the window) and its resident memory now and at its
// peak; the size of a ListWorkers answer and of WatchSweep's messages; every
// non-OK status by code. The simulated workers share this machine's cores
// with the coordinator, so the latencies are upper bounds for it.
#include "bench/fleet_figure.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "megabatch/v1/megabatch.grpc.pb.h"
#include "server/store/db.h"

namespace megabatch::bench {
namespace {

using v1::SweepService;
using v1::WorkerService;

// Round trips of one kind of call, and the codes of those that failed.
class Calls {
 public:
  void Record(const char* what, grpc::StatusCode code, double seconds) {
    std::lock_guard<std::mutex> lock(mu_);
    if (code == grpc::StatusCode::OK) {
      seconds_[what].push_back(seconds);
    } else {
      ++failed_[std::string(what) + " " + std::to_string(code)];
    }
  }
  std::vector<double> Of(const char* what) {
    std::lock_guard<std::mutex> lock(mu_);
    return seconds_[what];
  }
  // Failures a worker cannot retry: anything but UNAVAILABLE,
  // DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED.
  int Fatal() {
    std::lock_guard<std::mutex> lock(mu_);
    int n = 0;
    for (const auto& [key, count] : failed_) {
      const int code = std::atoi(key.c_str() + key.find(' ') + 1);
      if (code != grpc::StatusCode::UNAVAILABLE &&
          code != grpc::StatusCode::DEADLINE_EXCEEDED &&
          code != grpc::StatusCode::RESOURCE_EXHAUSTED) {
        n += count;
      }
    }
    return n;
  }
  std::string Failures() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const auto& [key, count] : failed_)
      out += " [" + key + "] x" + std::to_string(count);
    return out.empty() ? " none" : out;
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::vector<double>> seconds_;
  std::map<std::string, int64_t> failed_;
};

// The coordinator's CPU seconds so far: user + system, or one of them
// (`field` 14: user, 15: system).
double CpuSeconds(pid_t pid, int only = 0) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  // Fields 3.. after the command; utime and stime are fields 14 and 15.
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i >= 14 && (only == 0 || i == only)) ticks += std::stod(field);
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double MemoryMib(pid_t pid, const std::string& key) {
  return StatusField(pid, key) / 1024.0;
}
int Threads(pid_t pid) { return static_cast<int>(StatusField(pid, "Threads")); }

int FreePort() {
  // The coordinator's own port 0 would need its log read back; instead a
  // port the kernel just gave out.
  auto server = grpc::ServerBuilder();
  int port = 0;
  server.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                          &port);
  auto s = server.BuildAndStart();
  s->Shutdown();
  return port;
}

// The coordinator's /metrics page.
std::string Scrape(int port) {
  const std::string cmd =
      "/usr/bin/python3 -c 'import urllib.request,sys; sys.stdout.write("
      "urllib.request.urlopen(\"http://127.0.0.1:" +
      std::to_string(port) + "/metrics\").read().decode())'";
  std::string text;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[65536];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;)
      text.append(buf, n);
    pclose(p);
  }
  return text;
}

// The bucket bound under which a fraction `q` of a histogram's
// observations fall (Prometheus text; `series` is the name with its
// labels' start, e.g. megabatch_rpc_duration_seconds_bucket{method="X").
double BucketQuantile(const std::string& metrics, const std::string& series,
                      double q) {
  std::vector<std::pair<double, double>> buckets;  // (le, cumulative count)
  std::istringstream lines(metrics);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(series, 0) != 0) continue;
    const auto le = line.find("le=\"");
    if (le == std::string::npos) continue;
    const std::string bound =
        line.substr(le + 4, line.find('"', le + 4) - le - 4);
    buckets.emplace_back(bound == "+Inf" ? 1e9 : std::stod(bound),
                         std::stod(line.substr(line.rfind(' ') + 1)));
  }
  if (buckets.empty() || buckets.back().second == 0) return 0;
  for (const auto& [bound, count] : buckets) {
    if (count >= q * buckets.back().second) return bound;
  }
  return buckets.back().first;
}

pid_t StartCoordinator(const FleetOptions& o, const std::string& address,
                       int metrics_port) {
  const std::string db = o.dir + "/fleet.db", log = o.dir + "/coordinator.log";
  std::vector<std::string> args = {o.coordinator_bin,
                                   "--listen",
                                   address,
                                   "--db",
                                   db,
                                   "--metrics-listen",
                                   "127.0.0.1:" + std::to_string(metrics_port),
                                   "--heartbeat-interval-ms",
                                   "1000",
                                   "--lease-timeout-ms",
                                   "10000"};
  pid_t pid = fork();
  if (pid == 0) {
    // systemd's default soft limit: the coordinator raises it itself.
    rlimit files{};
    getrlimit(RLIMIT_NOFILE, &files);
    files.rlim_cur = std::min<rlim_t>(1024, files.rlim_max);
    setrlimit(RLIMIT_NOFILE, &files);
    FILE* out = std::fopen(log.c_str(), "w");
    if (out != nullptr) {
      dup2(fileno(out), 1);
      dup2(fileno(out), 2);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

bool RunFleet(const FleetOptions& o) {
  const std::string address = "127.0.0.1:" + std::to_string(FreePort());
  const int metrics_port = FreePort();
  const pid_t coordinator = StartCoordinator(o, address, metrics_port);
  auto control_channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  if (!control_channel->WaitForConnected(std::chrono::system_clock::now() +
                                         std::chrono::seconds(30))) {
    std::fprintf(stderr, "fleet: the coordinator did not come up (log: %s)\n",
                 (o.dir + "/coordinator.log").c_str());
    kill(coordinator, SIGKILL);
    return false;
  }
  auto sweeps = SweepService::NewStub(control_channel);

  Calls calls;
  std::atomic<int> registered{0}, polling{0};
  std::atomic<bool> stop{false};
  // Points made (each once; a failed report sends them again) and points
  // acknowledged. A report that timed out may have been stored anyway, so
  // the database holds between the two.
  std::atomic<int64_t> generated{0}, accepted{0}, first_leases{0}, folded{0};
  std::mutex first_mu;
  std::vector<double> first;  // from the submission to each first lease
  Clock::time_point submitted{};
  std::atomic<bool> was_submitted{false};
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(o.workers));
  const auto start = Clock::now();
  for (int i = 0; i < o.workers; ++i) {
    threads.emplace_back([&, i] {
      std::mt19937 rng(static_cast<uint32_t>(i) * 2654435761u + 1);
      grpc::ChannelArguments args;
      args.SetInt("grpc.use_local_subchannel_pool", 1);
      auto stub = WorkerService::NewStub(grpc::CreateCustomChannel(
          address, grpc::InsecureChannelCredentials(), args));
      int64_t worker_id = 0;
      // As a worker daemon does: a coordinator out of threads for the
      // moment (RESOURCE_EXHAUSTED) is asked again after a backoff.
      for (auto backoff = std::chrono::milliseconds(100);;
           backoff = std::min(2 * backoff, std::chrono::milliseconds(1000))) {
        grpc::ClientContext ctx;
        ctx.set_wait_for_ready(true);
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(120));
        v1::RegisterWorkerRequest req;
        req.set_name("fleet-" + std::to_string(i));
        req.set_slots(1);
        v1::RegisterWorkerResponse resp;
        const auto t0 = Clock::now();
        grpc::Status s = stub->RegisterWorker(&ctx, req, &resp);
        calls.Record("register", s.error_code(), Seconds(Clock::now() - t0));
        if (s.ok()) {
          worker_id = resp.worker_id();
          ++registered;
          break;
        }
        if (s.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED || stop) {
          return;
        }
        std::this_thread::sleep_for(backoff);
      }
      std::optional<v1::TrialLease> lease;
      Clock::time_point trial_end{}, next_report{}, next_heartbeat{},
          last_beat{};
      std::vector<v1::MetricPoint> pending;
      int64_t step = 0;
      bool first_lease = true;
      std::uniform_int_distribution<int> train_ms(5000, 15000), jitter(0, 999);
      next_heartbeat = Clock::now() + std::chrono::milliseconds(jitter(rng));
      auto heartbeat = [&] {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
        v1::HeartbeatRequest req;
        req.set_worker_id(worker_id);
        if (lease) *req.add_running() = *lease;
        v1::HeartbeatResponse resp;
        const auto t0 = Clock::now();
        grpc::Status s = stub->Heartbeat(&ctx, req, &resp);
        calls.Record("heartbeat", s.error_code(), Seconds(Clock::now() - t0));
        last_beat = Clock::now();
        next_heartbeat = last_beat + std::chrono::milliseconds(1500);
      };
      auto report = [&] {
        if (pending.empty()) return;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
        v1::ReportMetricsRequest req;
        req.set_worker_id(worker_id);
        *req.mutable_lease() = *lease;
        req.mutable_points()->Add(pending.begin(), pending.end());
        // The heartbeat rides along once half an interval has passed, as a
        // worker daemon folds it (docs/design.md).
        const bool beat =
            Clock::now() >= last_beat + std::chrono::milliseconds(500);
        if (beat) {
          req.mutable_heartbeat()->set_worker_id(worker_id);
          *req.mutable_heartbeat()->add_running() = *lease;
        }
        v1::ReportMetricsResponse resp;
        const auto t0 = Clock::now();
        grpc::Status s = stub->ReportMetrics(&ctx, req, &resp);
        calls.Record("report", s.error_code(), Seconds(Clock::now() - t0));
        if (s.ok()) {
          accepted += resp.accepted();
          pending.clear();
          if (beat) {
            ++folded;
            last_beat = Clock::now();
            next_heartbeat = last_beat + std::chrono::milliseconds(1500);
          }
        }  // else kept for the next report, as a worker does
      };
      while (!stop) {
        const auto now = Clock::now();
        if (now >= next_heartbeat) heartbeat();
        if (!lease) {
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(30));
          v1::LeaseTrialRequest req;
          req.set_worker_id(worker_id);
          req.set_wait_ms(1000);
          v1::LeaseTrialResponse resp;
          if (first_lease) ++polling;
          const auto t0 = Clock::now();
          grpc::Status s = stub->LeaseTrial(&ctx, req, &resp);
          const auto t1 = Clock::now();
          if (first_lease) --polling;
          if (!s.ok() || !resp.has_lease()) {
            if (!s.ok()) calls.Record("lease", s.error_code(), 0);
            continue;
          }
          if (first_lease && was_submitted) {
            std::lock_guard<std::mutex> l(first_mu);
            first.push_back(Seconds(t1 - submitted));
            ++first_leases;
          } else {
            calls.Record("lease", grpc::StatusCode::OK, Seconds(t1 - t0));
          }
          first_lease = false;
          lease = resp.lease();
          step = 0;
          trial_end = t1 + std::chrono::milliseconds(train_ms(rng));
          next_report = t1 + std::chrono::milliseconds(jitter(rng));
          continue;
        }
        if (now >= next_report) {
          for (int k = 0; k < o.points_per_report / 4; ++k) {
            ++step;
            for (const char* name :
                 {"train_loss", "lr", "samples_per_second", "grad_norm"}) {
              v1::MetricPoint p;
              p.set_name(name);
              p.set_step(step);
              p.set_value(1.0 / static_cast<double>(step));
              pending.push_back(std::move(p));
              ++generated;
            }
          }
          report();
          next_report += std::chrono::seconds(1);
        }
        if (now >= trial_end) {
          report();
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(10));
          v1::FinishTrialRequest req;
          req.set_worker_id(worker_id);
          *req.mutable_lease() = *lease;
          req.set_outcome(v1::TRIAL_STATE_COMPLETED);
          v1::FinishTrialResponse resp;
          const auto t0 = Clock::now();
          grpc::Status s = stub->FinishTrial(&ctx, req, &resp);
          calls.Record("finish", s.error_code(), Seconds(Clock::now() - t0));
          lease.reset();
          pending.clear();
          continue;
        }
        std::this_thread::sleep_until(
            std::min({next_report, next_heartbeat, trial_end}));
      }
    });
  }
  // Every worker registered and long-polling an idle coordinator.
  while (registered + static_cast<int>(calls.Fatal()) < o.workers &&
         Clock::now() - start < std::chrono::seconds(180)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const double register_s = Seconds(Clock::now() - start);
  while (polling < registered &&
         Clock::now() - start < std::chrono::seconds(240))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const int threads_idle = Threads(coordinator);
  const double rss_idle = MemoryMib(coordinator, "VmRSS");

  int64_t sweep_id = 0;
  {
    grpc::ClientContext ctx;
    v1::SubmitSweepRequest req;
    req.set_spec(o.spec);
    v1::SubmitSweepResponse resp;
    submitted = Clock::now();
    was_submitted = true;
    grpc::Status s = sweeps->SubmitSweep(&ctx, req, &resp);
    if (!s.ok()) {
      std::fprintf(stderr, "fleet: submit: %s\n", s.error_message().c_str());
      stop = true;
    }
    sweep_id = resp.sweep_id();
  }
  // WatchSweep, as a dashboard would: its snapshot, then its updates.
  std::vector<double> snapshot_bytes, update_bytes;
  grpc::ClientContext watch_ctx;
  std::thread watcher([&] {
    if (!o.watch) return;
    v1::WatchSweepRequest req;
    req.set_sweep_id(sweep_id);
    auto stream = sweeps->WatchSweep(&watch_ctx, req);
    v1::WatchSweepResponse msg;
    bool snapshot_done = false;
    while (stream->Read(&msg)) {
      (snapshot_done ? update_bytes : snapshot_bytes)
          .push_back(static_cast<double>(msg.ByteSizeLong()));
      snapshot_done = snapshot_done || msg.snapshot_complete();
    }
    stream->Finish();
  });
  const double cpu_start = CpuSeconds(coordinator);
  const double sys_start = CpuSeconds(coordinator, 15);
  const auto window_start = Clock::now();
  const int64_t accepted_start = accepted;
  std::this_thread::sleep_for(std::chrono::seconds(o.seconds));
  const double window = Seconds(Clock::now() - window_start);
  const double cpu = CpuSeconds(coordinator) - cpu_start;
  const double sys = CpuSeconds(coordinator, 15) - sys_start;
  const int64_t window_points = accepted - accepted_start;
  const double rss = MemoryMib(coordinator, "VmRSS");
  const double peak = MemoryMib(coordinator, "VmHWM");
  const int threads_busy = Threads(coordinator);
  const std::string metrics = Scrape(metrics_port);
  stop = true;
  for (auto& t : threads) t.join();
  watch_ctx.TryCancel();
  watcher.join();

  size_t list_workers_bytes = 0;
  int listed = 0;
  {
    grpc::ClientContext ctx;
    v1::ListWorkersResponse resp;
    if (sweeps->ListWorkers(&ctx, {}, &resp).ok()) {
      list_workers_bytes = resp.ByteSizeLong();
      listed = resp.workers_size();
    }
  }
  kill(coordinator, SIGTERM);
  int wstatus = 0;
  waitpid(coordinator, &wstatus, 0);
  int64_t stored = -1;
  if (auto db = store::Db::OpenReadOnly(o.dir + "/fleet.db"); db.ok()) {
    auto q = (*db)->Prepare(
        "SELECT count(*) FROM metrics m JOIN trials t ON t.id = m.trial_id "
        "WHERE t.sweep_id = ?");
    if (q.ok()) {
      q->Bind(1, sweep_id);
      if (auto row = q->Step(); row.ok() && *row) stored = q->Int(0);
    }
  }

  const auto ms = [](double s) { return 1e3 * s; };
  const auto dispatch = calls.Of("lease"), beats = calls.Of("heartbeat"),
             reports = calls.Of("report"), finishes = calls.Of("finish");
  std::printf(
      "fleet, %d simulated workers (%d registered in %.1f s), %d s window:\n",
      o.workers, registered.load(), register_s, o.seconds);
  std::printf(
      "  first lease of each worker, all woken by one submission: %lld of "
      "them, p50 %.0f ms, p99 %.0f ms, last %.0f ms\n",
      static_cast<long long>(first_leases.load()), ms(Percentile(first, 0.5)),
      ms(Percentile(first, 0.99)), ms(Percentile(first, 1.0)));
  std::printf(
      "  dispatch after that (LeaseTrial round trips that got a trial): %zu, "
      "p50 %.1f ms, p99 %.1f ms (goal p99 < 50 ms)\n",
      dispatch.size(), ms(Percentile(dispatch, 0.5)),
      ms(Percentile(dispatch, 0.99)));
  std::printf(
      "  heartbeat calls: %zu, p50 %.1f ms, p99 %.1f ms; %lld more heartbeats "
      "folded into reports\n",
      beats.size(), ms(Percentile(beats, 0.5)), ms(Percentile(beats, 0.99)),
      static_cast<long long>(folded.load()));
  std::printf(
      "  ReportMetrics (%d points): %zu, p50 %.1f ms, p99 %.1f ms; "
      "FinishTrial: %zu, p99 %.1f ms\n",
      o.points_per_report, reports.size(), ms(Percentile(reports, 0.5)),
      ms(Percentile(reports, 0.99)), finishes.size(),
      ms(Percentile(finishes, 0.99)));
  const bool all_stored = accepted <= stored && stored <= generated;
  std::printf(
      "  ingest: %.0f points/s over the window; %lld acknowledged in all, "
      "%lld rows in SQLite, %lld points made%s\n",
      static_cast<double>(window_points) / window,
      static_cast<long long>(accepted.load()), static_cast<long long>(stored),
      static_cast<long long>(generated.load()),
      all_stored ? " (every acknowledged point stored)" : " (POINTS LOST)");
  std::printf(
      "  coordinator: %.2f cores busy over the window (%.0f%% of it in the "
      "kernel); RSS %.0f MiB idle "
      "with the fleet polling, %.0f MiB at the end, peak %.0f MiB (goal < "
      "500 MiB); threads %d idle, %d busy\n",
      cpu / window, 100 * sys / std::max(cpu, 1e-9), rss_idle, rss, peak,
      threads_idle, threads_busy);
  // The goal: 10,000 workers per core.
  std::printf(
      "  coordinator CPU per worker: %.3f ms of CPU per worker-second (goal "
      "<= 0.1 ms: %.0f workers per core)\n",
      1e3 * cpu / window / o.workers, o.workers * window / std::max(cpu, 1e-9));
  std::printf(
      "  ListWorkers: %d workers in %zu bytes; WatchSweep: %zu snapshot "
      "messages, largest %.0f bytes; %zu updates, p50 %.0f bytes, largest %.0f "
      "bytes\n",
      listed, list_workers_bytes, snapshot_bytes.size(),
      Percentile(snapshot_bytes, 1.0), update_bytes.size(),
      Percentile(update_bytes, 0.5), Percentile(update_bytes, 1.0));
  // Handling times inside the coordinator, from its /metrics histograms
  // (bucket bounds; LeaseTrial's include the long poll).
  auto quantiles = [&](const std::string& label, const std::string& series) {
    std::printf(" %s p50 <= %g ms, p99 <= %g ms;", label.c_str(),
                ms(BucketQuantile(metrics, series, 0.5)),
                ms(BucketQuantile(metrics, series, 0.99)));
  };
  std::printf("  in the coordinator (histogram buckets, whole run):");
  for (const char* method :
       {"LeaseTrial", "Heartbeat", "ReportMetrics", "FinishTrial"}) {
    quantiles(method, std::string("megabatch_rpc_duration_seconds_bucket{"
                                  "method=\"") +
                          method + "\"");
  }
  for (const char* op : {"heartbeat", "append_metrics", "finish_trial"}) {
    quantiles(std::string("store ") + op,
              std::string("megabatch_store_write_duration_seconds_bucket{op="
                          "\"") +
                  op + "\"");
  }
  quantiles("dispatch", "megabatch_trial_dispatch_latency_seconds_bucket");
  std::printf("\n");
  std::printf("  refused or failed calls:%s; not retryable: %d\n",
              calls.Failures().c_str(), calls.Fatal());
  return calls.Fatal() == 0 && all_stored;
}

}  // namespace megabatch::bench
