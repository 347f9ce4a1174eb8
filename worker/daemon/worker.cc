#include "worker/daemon/worker.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string_view>
#include <thread>
#include <vector>

#include "common/datasets.h"
#include "common/grpc_status.h"
#include "common/metric_catalog.h"
#include "common/model_catalog.h"
#include "common/trainer_protocol.h"
#include "common/trial_config.h"
#include "worker/daemon/checkpoint_committer.h"
#include "worker/daemon/data_roots.h"
#include "worker/daemon/line_reader.h"
#include "worker/daemon/private_files.h"

extern char** environ;

namespace megabatch::worker {
namespace {

// Above this many unsent points the worker stops reading the trainer's
// stdout, so a trainer outrunning an unreachable coordinator blocks on its
// pipe instead of growing the worker's memory.
constexpr size_t kMaxBufferedPoints = 1 << 20;
constexpr auto kRpcTimeout = std::chrono::seconds(30);
// A model is up to the coordinator's --max-model-bytes (512 MiB by default).
constexpr auto kModelFetchTimeout = std::chrono::minutes(10);
constexpr auto kFinishRetryFor = std::chrono::seconds(120);

std::chrono::system_clock::time_point Deadline(std::chrono::milliseconds d) {
  return std::chrono::system_clock::now() + d;
}

std::string DescribeExit(int wstatus) {
  if (WIFEXITED(wstatus)) {
    return "trainer exited with code " + std::to_string(WEXITSTATUS(wstatus));
  }
  if (WIFSIGNALED(wstatus)) {
    int sig = WTERMSIG(wstatus);
    std::string s = "trainer killed by signal " + std::to_string(sig) + " (" +
                    strsignal(sig) + ")";
    if (sig == SIGKILL) s += "; out of memory?";
    return s;
  }
  return "trainer ended with status " + std::to_string(wstatus);
}

// Whether a failed trainer's words say an allocation failed.
bool OutOfMemory(const std::string& text) {
  for (const char* sign :
       {"can't allocate memory", "std::bad_alloc", "Cannot allocate memory"}) {
    if (text.find(sign) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

Result<TrainerLine> ParseTrainerLine(const std::string& line) {
  Result<protocol::Line> parsed = protocol::ParseLine(line);
  if (!parsed.ok()) return parsed.status();
  TrainerLine out;
  out.event = std::move(parsed->event);
  out.message = std::move(parsed->message);
  out.retry = parsed->retry;
  if (out.event == protocol::kCheckpoint) {
    out.checkpoint_step = parsed->step;
    out.checkpoint_path = std::move(parsed->checkpoint_path);
  }
  for (const auto& [name, value] : parsed->metrics) {
    v1::MetricPoint p;
    p.set_name(name);
    p.set_step(parsed->step);
    p.set_value(value);
    out.points.push_back(std::move(p));
  }
  return out;
}

Worker::Worker(std::shared_ptr<grpc::Channel> channel, WorkerOptions options)
    : stub_(v1::WorkerService::NewStub(channel)),
      options_(std::move(options)),
      user_files_(
          options_.model_cache_dir.empty()
              ? (std::filesystem::path(DefaultCacheDir()) / "models").string()
              : options_.model_cache_dir,
          options_.data_roots) {}

Worker::~Worker() { Stop(); }

bool Worker::WaitFor(std::chrono::milliseconds d) {
  const auto deadline = std::chrono::steady_clock::now() + d;
  MutexLock lock(&mu_);
  while (!stopping() && stop_cv_.WaitUntil(deadline)) {
  }
  return stopping();
}

void Worker::Stop() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& [key, r] : running_) {
      r.stop_requested = true;
      if (r.pid > 0) kill(-r.pid, SIGKILL);
    }
  }
  stop_cv_.SignalAll();
}

Result<v1::RegisterWorkerResponse> Worker::Register() {
  v1::RegisterWorkerRequest req;
  req.set_name(options_.name);
  req.set_slots(options_.slots);
  req.set_rendezvous_host(options_.rendezvous_host);
  req.set_rendezvous_port_first(options_.rendezvous_port_first);
  req.set_rendezvous_port_count(options_.rendezvous_port_count);
  auto backoff = std::chrono::milliseconds(100);
  while (!stopping()) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(std::chrono::seconds(5)));
    // Waits for the channel to connect (it retries within 100 ms to 2 s,
    // main.cc), so a coordinator coming up is seen at once.
    ctx.set_wait_for_ready(true);
    v1::RegisterWorkerResponse resp;
    grpc::Status s = stub_->RegisterWorker(&ctx, req, &resp);
    if (s.ok()) {
      spdlog::info("registered as worker {} with {} slots", resp.worker_id(),
                   options_.slots);
      return resp;
    }
    // A coordinator starting, away, or out of threads for the moment
    // (RESOURCE_EXHAUSTED: a whole fleet registering at once).
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
        s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED &&
        s.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) {
      return FromGrpcStatus(s);
    }
    spdlog::warn("coordinator unreachable or busy ({}); retrying",
                 s.error_message());
    if (WaitFor(backoff)) break;
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }
  return Status(StatusCode::kCancelled, "stopped before registering");
}

Status Worker::Run() {
  Result<v1::RegisterWorkerResponse> registered = Register();
  if (!registered.ok()) return registered.status();
  worker_id_ = registered->worker_id();
  heartbeat_interval_ = std::chrono::milliseconds(
      std::max(50, registered->heartbeat_interval_ms()));
  checkpoint_history_ =
      std::chrono::milliseconds(registered->checkpoint_history_ms());
  checkpoint_root_ = !options_.artifacts_dir.empty() ? options_.artifacts_dir
                     : !registered->artifacts_dir().empty()
                         ? registered->artifacts_dir()
                         : options_.work_dir;
  spdlog::info(
      "checkpoints in {}{}", checkpoint_root_,
      checkpoint_root_ == options_.work_dir ? " (this worker only)" : "");
  std::error_code ec;
  std::filesystem::create_directories(options_.work_dir, ec);
  if (ec) {
    return FailedPreconditionError("work dir " + options_.work_dir + ": " +
                                   ec.message());
  }
  std::vector<std::thread> threads;
  if (!options_.gpus.empty()) {
    gpu_stats_ = GpuStats::Open();
    for (const auto& id : options_.gpus) gpu_indices_.push_back(std::stoi(id));
    spdlog::info("GPU utilisation and memory: {}",
                 gpu_stats_ ? "reported from NVML" : "not reported (no NVML)");
  }
  threads.emplace_back([this] { HeartbeatLoop(); });
  for (int slot = 0; slot < options_.slots; ++slot) {
    threads.emplace_back([this, slot] { SlotLoop(slot); });
  }
  for (auto& t : threads) t.join();
  return Status();
}

namespace {

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void Worker::Drain(std::chrono::seconds grace) {
  if (draining()) return;
  // The deadline before the flag: HeartbeatLoop reads it once draining.
  drain_deadline_ns_ =
      SteadyNowNs() +
      std::chrono::duration_cast<std::chrono::nanoseconds>(grace).count();
  if (draining_.exchange(true)) return;
  MutexLock lock(&mu_);
  spdlog::info("draining: {} trials to checkpoint and give back within {} s",
               running_.size(), grace.count());
  for (const auto& [key, r] : running_) {
    if (r.pid > 0) kill(r.pid, SIGUSR1);
  }
}

void Worker::GiveBack(const v1::TrialLease& lease, const std::string& why) {
  v1::FinishTrialRequest req;
  req.set_worker_id(worker_id_);
  *req.mutable_lease() = lease;
  req.set_preempted(true);
  req.set_message(why);
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(std::chrono::seconds(5)));
  v1::FinishTrialResponse resp;
  grpc::Status s = stub_->FinishTrial(&ctx, req, &resp);
  if (s.ok()) {
    spdlog::info("trial {}: given back ({})", lease.trial_id(), why);
  } else {
    spdlog::warn("trial {}: not given back ({}); the lease timeout requeues it",
                 lease.trial_id(), s.error_message());
  }
}

v1::HeartbeatRequest Worker::BuildHeartbeat() {
  v1::HeartbeatRequest req;
  req.set_worker_id(worker_id_);
  {
    MutexLock lock(&mu_);
    for (const auto& [key, r] : running_) {
      auto* lease = req.add_running();
      lease->set_trial_id(key.first);
      lease->set_lease_id(r.lease_id);
      lease->set_rank(key.second);
    }
  }
  if (gpu_stats_) {
    for (const GpuReading& g : gpu_stats_->Read(gpu_indices_)) {
      v1::GpuStats* stats = req.add_gpus();
      stats->set_index(g.index);
      stats->set_utilization_ratio(g.utilization_ratio);
      stats->set_memory_used_bytes(g.memory_used_bytes);
      stats->set_memory_total_bytes(g.memory_total_bytes);
    }
  }
  return req;
}

void Worker::Beaten(
    const google::protobuf::RepeatedField<int64_t>& stop_trial_ids) {
  last_beat_ns_ = SteadyNowNs();
  for (int64_t trial_id : stop_trial_ids) {
    spdlog::info("coordinator says stop trial {}", trial_id);
    StopTrial(trial_id);
  }
}

void Worker::HeartbeatLoop() {
  // A report carries the heartbeat once half an interval has passed (Flush);
  // a heartbeat of its own goes when none did for an interval and a half,
  // looked at twice an interval. The slack lets a report of any phase
  // carry it: with both due once an interval, a report just after each
  // heartbeat would otherwise never fold one.
  const int64_t due_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(heartbeat_interval_)
          .count() *
      3 / 2;
  const int64_t idle_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              options_.exit_when_idle)
                              .count();
  int64_t busy_at = SteadyNowNs();
  while (!WaitFor(heartbeat_interval_ / 2)) {
    // A slot holding a lease counts from the lease on, also while it
    // fetches files or starts its trainer (before running_ has it).
    const bool busy = holding_.load() > 0;
    const int64_t now = SteadyNowNs();
    if (busy) busy_at = now;
    if (draining() && (!busy || now >= drain_deadline_ns_)) {
      if (busy) spdlog::warn("drain: grace period over; stopping trainers");
      Stop();
      break;
    }
    if (idle_ns > 0 && !busy && now - busy_at >= idle_ns) {
      spdlog::info("no trial for {} s: exiting (--exit-when-idle)",
                   options_.exit_when_idle.count());
      Stop();
      break;
    }
    if (now - last_beat_ns_ < due_ns) continue;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(std::chrono::seconds(5)));
    v1::HeartbeatResponse resp;
    grpc::Status s = stub_->Heartbeat(&ctx, BuildHeartbeat(), &resp);
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
      // The coordinator does not know this worker: its database was
      // restored from a backup older than the registration. Register
      // again; the trials running under the old id hear at the next
      // heartbeat that their leases are void.
      spdlog::warn("{}; registering again", s.error_message());
      Result<v1::RegisterWorkerResponse> again = Register();
      if (again.ok()) worker_id_ = again->worker_id();
      continue;
    }
    if (!s.ok()) {
      spdlog::warn("heartbeat failed: {}", s.error_message());
      continue;
    }
    Beaten(resp.stop_trial_ids());
  }
}

void Worker::StopTrial(int64_t trial_id) {
  MutexLock lock(&mu_);
  for (auto it = running_.lower_bound({trial_id, 0});
       it != running_.end() && it->first.first == trial_id; ++it) {
    it->second.stop_requested = true;
    if (it->second.pid > 0) kill(-it->second.pid, SIGKILL);
  }
}

void Worker::SlotLoop(int slot) {
  WarmTrainer warm;  // its destructor stops a trainer still kept
  while (!stopping() && !draining()) {
    v1::LeaseTrialRequest req;
    req.set_worker_id(worker_id_);
    req.set_wait_ms(static_cast<int32_t>(options_.lease_wait.count()));
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(options_.lease_wait + std::chrono::seconds(5)));
    v1::LeaseTrialResponse resp;
    grpc::Status s = stub_->LeaseTrial(&ctx, req, &resp);
    if (!s.ok()) {
      spdlog::warn("slot {}: lease failed: {}", slot, s.error_message());
      WaitFor(std::chrono::milliseconds(500));
      continue;
    }
    if (!resp.has_lease()) {
      // No work for a whole long poll: the sweep the warm trainer was kept
      // for has nothing left here; return its memory.
      warm.process.reset();
      continue;
    }
    if (stopping() || draining()) {
      GiveBack(resp.lease(), "the worker is leaving");
      break;
    }
    ++holding_;
    spdlog::info("slot {}: running trial {} (lease {})", slot,
                 resp.lease().trial_id(), resp.lease().lease_id());
    try {
      RunTrial(slot, resp, &warm);
    } catch (const std::exception& e) {
      // The per-trial loop is where a trial's unexpected failure is caught;
      // its trainer, in whatever state, is not used again.
      warm.process.reset();
      FinishTrial(resp.lease(), v1::TRIAL_STATE_FAILED,
                  std::string("worker error: ") + e.what(), "");
    }
    --holding_;
  }
}

Worker::Flushed Worker::Flush(const v1::TrialLease& lease,
                              std::vector<v1::MetricPoint>* points) {
  Flushed out;
  // In batches of at most max_batch_points: a backlog built while the
  // coordinator was away must not become one oversized report.
  while (!points->empty()) {
    size_t n =
        std::min(points->size(),
                 static_cast<size_t>(std::max(1, options_.max_batch_points)));
    // Never split one step's points between two reports: a resume bound by
    // the coordinator's last stored train_loss step (resume_max_step) then
    // has all of that step.
    if (n < points->size()) {
      size_t cut = n;
      while (cut > 0 && (*points)[cut - 1].step() == (*points)[cut].step())
        --cut;
      if (cut > 0) n = cut;
    }
    v1::ReportMetricsRequest req;
    req.set_worker_id(worker_id_);
    *req.mutable_lease() = lease;
    req.mutable_points()->Add(points->begin(), points->begin() + n);
    const bool beat = SteadyNowNs() - last_beat_ns_ >=
                      std::chrono::duration_cast<std::chrono::nanoseconds>(
                          heartbeat_interval_)
                              .count() /
                          2;
    if (beat) *req.mutable_heartbeat() = BuildHeartbeat();
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(kRpcTimeout));
    v1::ReportMetricsResponse resp;
    grpc::Status s = stub_->ReportMetrics(&ctx, req, &resp);
    if (s.ok()) {
      if (beat) Beaten(resp.stop_trial_ids());
      points->erase(points->begin(), points->begin() + n);
      continue;
    }
    if (s.error_code() == grpc::StatusCode::ABORTED ||
        s.error_code() == grpc::StatusCode::NOT_FOUND ||
        s.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
        s.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
        s.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
      spdlog::warn("trial {}: metrics refused: {}", lease.trial_id(),
                   s.error_message());
      points->clear();
      out.lease_ok = false;
      return out;
    }
    // Unreachable, over the coordinator's rate, or its database is full
    // (RESOURCE_EXHAUSTED): keep the points and try again at the next flush.
    if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      spdlog::debug("trial {}: {}", lease.trial_id(), s.error_message());
      out.full = true;
    }
    out.reachable = false;
    return out;
  }
  return out;
}

Status Worker::FetchModel(const std::string& sha256,
                          const std::function<Status(std::string_view)>& sink) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(kModelFetchTimeout));
  v1::FetchModelRequest req;
  req.set_worker_id(worker_id_);
  req.set_sha256(sha256);
  auto reader = stub_->FetchModel(&ctx, req);
  v1::FetchModelResponse chunk;
  Status written;
  while (written.ok() && reader->Read(&chunk)) written = sink(chunk.data());
  if (!written.ok()) ctx.TryCancel();
  const grpc::Status fetched = reader->Finish();
  if (!written.ok()) return written;
  if (!fetched.ok()) {
    return Status(static_cast<StatusCode>(fetched.error_code()),
                  "fetching model " + sha256.substr(0, 12) + ": " +
                      fetched.error_message());
  }
  return Status();
}

void Worker::FinishTrial(const v1::TrialLease& lease, v1::TrialState outcome,
                         const std::string& message,
                         const std::string& stderr_tail, bool retry) {
  v1::FinishTrialRequest req;
  req.set_worker_id(worker_id_);
  *req.mutable_lease() = lease;
  req.set_outcome(outcome);
  req.set_message(message);
  req.set_stderr_tail(stderr_tail);
  req.set_no_retry(!retry);
  auto give_up = std::chrono::steady_clock::now() + kFinishRetryFor;
  auto backoff = std::chrono::milliseconds(100);
  while (true) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(kRpcTimeout));
    v1::FinishTrialResponse resp;
    grpc::Status s = stub_->FinishTrial(&ctx, req, &resp);
    if (s.ok()) return;
    // A full database (RESOURCE_EXHAUSTED) stored nothing: retry until it
    // has room, however long; an unreachable coordinator for a while.
    const bool full = s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
    if ((s.error_code() != grpc::StatusCode::UNAVAILABLE && !full) ||
        (!full && std::chrono::steady_clock::now() > give_up)) {
      spdlog::warn("trial {}: finish refused: {}", lease.trial_id(),
                   s.error_message());
      return;
    }
    if (WaitFor(backoff)) return;
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

namespace {

// This process's environment with CUDA_VISIBLE_DEVICES set to `gpu` (an id,
// or "" for a CPU slot), and OpenMP told to sleep rather than spin while
// it waits (unless OMP_WAIT_POLICY is set already): a spinning thread of one
// trainer takes a core another trainer needs when a host is shared, and on
// a host of its own the passive policy costs nothing measurable.
std::vector<std::string> TrainerEnvironment(const std::string& gpu) {
  constexpr std::string_view kVisible = "CUDA_VISIBLE_DEVICES=";
  constexpr std::string_view kWaitPolicy = "OMP_WAIT_POLICY=";
  std::vector<std::string> env;
  bool wait_policy = false;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view var(*e);
    wait_policy =
        wait_policy || var.substr(0, kWaitPolicy.size()) == kWaitPolicy;
    if (var.substr(0, kVisible.size()) != kVisible) env.emplace_back(*e);
  }
  env.push_back(std::string(kVisible) + gpu);
  if (!wait_policy) env.push_back(std::string(kWaitPolicy) + "PASSIVE");
  return env;
}

}  // namespace

std::optional<int> Worker::RecordedThreads(
    const std::filesystem::path& lease_dir) {
  std::ifstream in(lease_dir / kNumericEnvironmentFile);
  nlohmann::json env = nlohmann::json::parse(in, nullptr, false);
  if (env.is_object() && env.contains("threads") &&
      env["threads"].is_number_integer() && env["threads"].get<int>() >= 1 &&
      env["threads"].get<int>() <= kMaxThreads) {
    return env["threads"].get<int>();
  }
  spdlog::warn(
      "{}: no numeric environment recorded; resuming with this "
      "slot's threads (the numbers may differ in the last bits)",
      (lease_dir / kNumericEnvironmentFile).string());
  return std::nullopt;
}

bool Worker::HostOversubscribed() const {
  return options_.host_claims &&
         options_.host_claims->Read().active > options_.host_cores;
}

Result<Worker::Attempt> Worker::PrepareAttempt(
    bool* input_changed, int slot, const v1::LeaseTrialResponse& leased) {
  namespace fs = std::filesystem;
  const v1::TrialLease& lease = leased.lease();
  const std::string& config_json = leased.config_json();
  fs::path dir =
      fs::path(options_.work_dir) /
      ("trial-" + std::to_string(lease.trial_id()) + "-lease-" +
       std::to_string(lease.lease_id()) +
       (lease.rank() > 0 ? "-rank-" + std::to_string(lease.rank()) : ""));
  fs::create_directories(dir);
  nlohmann::json config = nlohmann::json::parse(config_json, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return InvalidArgumentError("lease carried an invalid config");
  }
  if (const auto dataset = config.find("dataset");
      dataset != config.end() && dataset->is_object() &&
      dataset->contains("path") && (*dataset)["path"].is_string()) {
    MEGABATCH_RETURN_IF_ERROR(CheckDataPath(
        (*dataset)["path"].get<std::string>(), options_.data_roots));
  }
  if (auto model = config.find("model");
      model != config.end() && model->is_object() &&
      model->value("type", "") == kTorchScriptModel) {
    // The user's data files as submitted (a changed one fails the trial for
    // good: FAILED_PRECONDITION), and the module by its hash.
    MEGABATCH_RETURN_IF_ERROR(user_files_.CheckDataFiles(
        config.value("dataset", nlohmann::json::object()), input_changed));
    const std::string sha256 = model->value("sha256", "");
    MEGABATCH_ASSIGN_OR_RETURN(std::string file,
                               user_files_.Model(sha256, [&](const auto& sink) {
                                 return FetchModel(sha256, sink);
                               }));
    (*model)["file"] = file;
  }
  Attempt a;
  // Each attempt (lease) checkpoints into its own directory, so an attempt
  // that lost its lease but still runs (a partitioned worker) cannot
  // overwrite the checkpoint its successor resumes from; a new attempt
  // resumes from the newest earlier attempt's committed checkpoint.
  a.trial_dir = fs::path(checkpoint_root_) /
                ("trial-" + std::to_string(lease.trial_id()));
  a.lease_dir = a.trial_dir / ("lease-" + std::to_string(lease.lease_id()));
  std::error_code ec;
  fs::create_directories(a.lease_dir, ec);
  if (ec) {
    // A full disk costs this attempt its resume points, not the trial: the
    // trainer's checkpoint writes fail and it trains on (checkpoint_failed).
    spdlog::warn(
        "trial {}: cannot create checkpoint dir {}: {}; training "
        "without checkpoints",
        lease.trial_id(), a.lease_dir.string(), ec.message());
  }
  a.threads = options_.threads_per_slot;
  if (config.value("checkpoint_every_steps", 0) > 0) {
    a.resume_from = CheckpointCommitter::Latest(
        a.trial_dir, lease.lease_id(),
        leased.has_resume_max_step()
            ? std::optional<int64_t>(leased.resume_max_step())
            : std::nullopt);
    // A trial's numbers depend on its intra-op threads (the order of
    // floating-point sums): it keeps the threads of the attempt whose
    // checkpoint it resumes, whatever this slot has.
    if (!a.resume_from.empty()) {
      a.threads = RecordedThreads(fs::path(a.resume_from).parent_path())
                      .value_or(a.threads);
      if (a.threads != options_.threads_per_slot) {
        spdlog::info(
            "trial {}: resuming with its checkpoint's {} threads (this slot "
            "has {})",
            lease.trial_id(), a.threads, options_.threads_per_slot);
      }
    }
    if (!ec) {
      Status recorded = WriteFileAtomically(
          (a.lease_dir / kNumericEnvironmentFile).string(),
          nlohmann::json{{"threads", a.threads}}.dump() + "\n");
      if (!recorded.ok()) {
        spdlog::warn("trial {}: {}; a resume may run with other threads",
                     lease.trial_id(), recorded.message());
      }
    }
  }
  SetWorkerFields(&config, a.threads, (a.lease_dir / "checkpoint.pt").string());
  a.config_path = (dir / "config.json").string();
  if (Status written = WriteFileAtomically(a.config_path, config.dump(2));
      !written.ok()) {
    return InternalError("cannot write " + written.message());
  }
  // A warm trainer (--serve) of this slot runs the trial when it was
  // started for the same sweep, threads and device; else a fresh one does.
  // A data-parallel rank always gets a fresh one (its process group lives
  // for one trial), and so does every trial with options_.warm_trainers off:
  // it is told the one request and exits after it.
  a.gpu = options_.gpus.empty() ? "" : options_.gpus[static_cast<size_t>(slot)];
  a.reusable = options_.warm_trainers && !config.contains("distributed");
  a.key = config.value("sweep_id", nlohmann::json(0)).dump() + "/" +
          std::to_string(a.threads) + "/" + a.gpu;
  return a;
}

void Worker::RunTrial(int slot, const v1::LeaseTrialResponse& leased,
                      WarmTrainer* warm) {
  const v1::TrialLease& lease = leased.lease();
  bool input_changed = false;
  Result<Attempt> prepared = PrepareAttempt(&input_changed, slot, leased);
  if (!prepared.ok()) {
    // A data file not as submitted fails the trial for good: a retry would
    // fail the same way. Anything else (a file missing here, outside this
    // worker's roots, the coordinator unreachable) may not happen elsewhere.
    FinishTrial(lease, v1::TRIAL_STATE_FAILED, prepared.status().message(), "",
                !input_changed);
    return;
  }
  const Attempt& attempt = *prepared;
  if (warm->process && (!attempt.reusable || warm->key != attempt.key)) {
    warm->process.reset();
  }
  const bool fresh = warm->process == nullptr;
  if (fresh) {
    std::vector<std::string> args = {"--serve", "--work-dir",
                                     options_.work_dir};
    if (options_.trainer_memory > 0) {
      args.insert(args.end(),
                  {"--memory-limit", std::to_string(options_.trainer_memory)});
    }
    auto spawned = TrainerProcess::Spawn(options_.trainer_path, args,
                                         TrainerEnvironment(attempt.gpu));
    if (!spawned.ok()) {
      FinishTrial(lease, v1::TRIAL_STATE_FAILED, spawned.status().message(),
                  "");
      return;
    }
    warm->process = std::move(*spawned);
    warm->key = attempt.key;
  }
  TrainerProcess& trainer = *warm->process;
  spdlog::info("trial {}: trainer {} ({})", lease.trial_id(), trainer.pid(),
               fresh ? "fresh" : "warm");
  if (!attempt.resume_from.empty()) {
    spdlog::info("trial {}: resuming from {}", lease.trial_id(),
                 attempt.resume_from);
  }
  bool sent = false;
  {
    // Registering under the lock means Stop() either sees the pid or runs
    // before the request and is caught by the check below.
    MutexLock lock(&mu_);
    if (!stopping()) {
      sent = trainer.Send(
          protocol::ServeRequest(attempt.config_path, attempt.resume_from));
      running_[{lease.trial_id(), lease.rank()}] =
          Running{trainer.pid(), lease.lease_id(), false};
      // Drain() set the flag before it went through running_: a trial
      // registered after that asks for its own checkpoint and stop.
      if (sent && draining()) kill(trainer.pid(), SIGUSR1);
    }
  }
  if (!attempt.reusable) trainer.CloseStdin();
  if (!sent || stopping()) {
    {
      MutexLock lock(&mu_);
      running_.erase({lease.trial_id(), lease.rank()});
    }
    warm->process.reset();
    if (stopping()) {
      // Stopped (a drain's end, --exit-when-idle) before the trial started:
      // it goes back to the queue now, not after the lease timeout.
      GiveBack(lease, "the worker stopped before the trial started");
      return;
    }
    // A warm trainer that died while idle: the trial was not started; go
    // again with a fresh one.
    if (!fresh) return RunTrial(slot, leased, warm);
    FinishTrial(lease, v1::TRIAL_STATE_FAILED,
                "cannot send the trial to trainer " + options_.trainer_path,
                "");
    return;
  }

  const int threads = attempt.threads;
  if (options_.host_claims) options_.host_claims->AddActive(threads);
  AttemptOutput out;
  CheckpointCommitter checkpoints(attempt.lease_dir, checkpoint_history_);
  PumpOutput(lease, attempt, trainer, &checkpoints, &out);
  // A trainer that ended its trial with an event and may take another is
  // kept; any other (gone, killed, told to exit, or failed) is reaped here.
  const bool keep = out.TrialOver(attempt.reusable) && !stopping();
  int wstatus = 0;
  if (!keep) {
    // It exits by itself: at the end of its stdin, after a failed trial,
    // or it is gone already (killed by StopTrial or Stop, or crashed).
    trainer.CloseStdin();
    wstatus = trainer.Reap();
  }
  if (options_.host_claims) options_.host_claims->AddActive(-threads);
  bool stop_requested;
  {
    MutexLock lock(&mu_);
    stop_requested = running_[{lease.trial_id(), lease.rank()}].stop_requested;
    running_.erase({lease.trial_id(), lease.rank()});
  }
  if (stop_requested && keep) {
    // The stop came after the trial's end: its trainer was killed.
    wstatus = trainer.Reap();
  }
  if (!keep || stop_requested) warm->process.reset();
  // Send what is left, retrying while the coordinator is briefly away, and
  // for as long as its database is full (the points are not lost).
  auto give_up = std::chrono::steady_clock::now() + kFinishRetryFor;
  while (out.lease_ok && !out.pending.empty()) {
    const Flushed flushed = Flush(lease, &out.pending);
    out.lease_ok = flushed.lease_ok;
    out.reachable = flushed.reachable;
    if (out.reachable ||
        (!flushed.full && std::chrono::steady_clock::now() > give_up) ||
        WaitFor(std::chrono::milliseconds(500))) {
      break;
    }
  }
  checkpoints.CommitIfStored(out.AllStored());
  if (out.lease_ok &&
      (out.event == protocol::kPreempted || (draining() && stop_requested))) {
    GiveBack(lease, out.event == protocol::kPreempted
                        ? "drained: " + out.message
                        : "drained: killed after the grace period; resumes "
                          "from its last committed checkpoint");
    return;
  }
  if (stop_requested || !out.lease_ok) {
    spdlog::info("trial {} stopped ({})", lease.trial_id(),
                 out.event.empty() ? DescribeExit(wstatus)
                                   : "trainer reported " + out.event);
    return;
  }
  ReportOutcome(lease, attempt, out, wstatus, keep);
}

void Worker::PumpOutput(const v1::TrialLease& lease, const Attempt& attempt,
                        TrainerProcess& trainer,
                        CheckpointCommitter* checkpoints, AttemptOutput* out) {
  // The trial's threads and whether it shared cores, recorded as metrics at
  // its first step and when sharing is first seen (so their largest value
  // over the trial says whether it ever shared).
  bool threads_recorded = false, shared = false;
  int64_t last_step = 0;
  auto last_share_check = std::chrono::steady_clock::now();
  auto record_sharing = [&](int64_t step) {
    auto point = [&](const char* name, double value) {
      v1::MetricPoint p;
      p.set_name(name);
      p.set_step(step);
      p.set_value(value);
      out->pending.push_back(std::move(p));
    };
    if (!threads_recorded) {
      threads_recorded = true;
      shared =
          HostOversubscribed() || attempt.threads > options_.threads_per_slot;
      point(metric::kThreads, attempt.threads);
      point(metric::kSharedCores, shared ? 1 : 0);
    } else if (!shared && HostOversubscribed()) {
      shared = true;
      point(metric::kSharedCores, 1);
    }
  };
  auto last_flush = std::chrono::steady_clock::now();
  bool out_open = true, err_open = true;
  char buf[65536];
  // A preempted trial's trainer (a warm one waits for its next request) is
  // not kept: the worker is draining.
  while ((out_open || err_open) && !out->TrialOver(attempt.reusable) &&
         out->event != protocol::kPreempted) {
    pollfd fds[2];
    int nfds = 0;
    bool read_out = out_open && out->pending.size() < kMaxBufferedPoints;
    if (read_out) fds[nfds++] = {trainer.stdout_fd(), POLLIN, 0};
    if (err_open) fds[nfds++] = {trainer.stderr_fd(), POLLIN, 0};
    int timeout_ms = static_cast<int>(options_.flush_interval.count());
    int ready = nfds > 0 ? poll(fds, nfds, timeout_ms) : 0;
    if (nfds == 0) WaitFor(options_.flush_interval);
    if (ready < 0 && errno != EINTR) break;
    for (int i = 0; i < nfds && ready > 0; ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      bool is_out = fds[i].fd == trainer.stdout_fd();
      if (n <= 0) {
        (is_out ? out_open : err_open) = false;
        continue;
      }
      if (!is_out) {
        out->stderr_tail.Append({buf, static_cast<size_t>(n)});
        continue;
      }
      trainer.stdout_lines.Append({buf, static_cast<size_t>(n)});
      for (std::string line; trainer.stdout_lines.Next(&line);) {
        auto parsed = ParseTrainerLine(line);
        if (!parsed.ok()) {
          out->stderr_tail.Append(line + "\n");
          continue;
        }
        for (auto& p : parsed->points) {
          last_step = std::max(last_step, p.step());
          if (!threads_recorded) record_sharing(p.step());
          out->pending.push_back(std::move(p));
        }
        if (parsed->event == protocol::kCheckpoint) {
          // Every point before it is in `pending` or stored already.
          checkpoints->Announce(parsed->checkpoint_step,
                                parsed->checkpoint_path);
        } else if (!parsed->event.empty()) {
          out->event = parsed->event;
          out->message = parsed->message;
          out->retry = parsed->retry;
        }
      }
    }
    auto now = std::chrono::steady_clock::now();
    if (threads_recorded && !shared &&
        now - last_share_check >= std::chrono::seconds(1)) {
      last_share_check = now;
      record_sharing(last_step);
    }
    if (out->lease_ok && (out->pending.size() >=
                              static_cast<size_t>(options_.max_batch_points) ||
                          now - last_flush >= options_.flush_interval)) {
      last_flush = now;
      const Flushed flushed = Flush(lease, &out->pending);
      out->lease_ok = flushed.lease_ok;
      out->reachable = flushed.reachable;
      if (!out->lease_ok) StopTrial(lease.trial_id());
    }
    checkpoints->CommitIfStored(out->AllStored());
  }
}

void Worker::ReportOutcome(const v1::TrialLease& lease, const Attempt& attempt,
                           const AttemptOutput& out, int wstatus, bool kept) {
  const std::string& event = out.event;
  const std::string how =
      event.empty() ? DescribeExit(wstatus) : "trainer reported " + event;
  // The outcome is the trainer's event (a trainer that exited must also
  // have exited cleanly), or without one its exit code (--config's).
  const bool exited_ok = WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;
  const bool completed =
      event.empty() ? exited_ok
                    : event == protocol::kCompleted && (kept || exited_ok);
  const bool diverged =
      event.empty() ? WIFEXITED(wstatus) &&
                          WEXITSTATUS(wstatus) == protocol::kExitDiverged
                    : event == protocol::kDiverged && (kept || exited_ok);
  if (completed || diverged) {
    FinishTrial(
        lease, completed ? v1::TRIAL_STATE_COMPLETED : v1::TRIAL_STATE_DIVERGED,
        out.message, "");
    // Ended for good: its checkpoints are of no more use (rank 0 wrote
    // them; it removes them).
    if (lease.rank() == 0) {
      std::error_code ec;
      std::filesystem::remove_all(attempt.trial_dir, ec);
    }
  } else {
    std::string message = event == protocol::kFailed || event.empty()
                              ? DescribeExit(wstatus)
                              : how;
    if (!out.message.empty()) message += ": " + out.message;
    if (options_.trainer_memory > 0 &&
        OutOfMemory(message + "\n" + out.stderr_tail.str())) {
      message += " (this worker limits each trainer to " +
                 std::to_string(options_.trainer_memory >> 20) +
                 " MiB: --trainer-memory)";
    }
    FinishTrial(lease, v1::TRIAL_STATE_FAILED, message, out.stderr_tail.str(),
                event != protocol::kFailed || out.retry);
  }
  spdlog::info("trial {} ended: {}", lease.trial_id(), how);
}

}  // namespace megabatch::worker
