// Worker: the daemon side of WorkerService. Registers its slots, heartbeats,
// leases trials, and runs each in its slot's megabatch-trainer (kept warm
// between trials of one sweep, docs/running.md), forwarding the trainer's
// JSON-lines metrics in batches and reporting how the trial ended. A
// crashing trainer fails its trial, never the daemon.
#ifndef MEGABATCH_WORKER_DAEMON_WORKER_H_
#define MEGABATCH_WORKER_DAEMON_WORKER_H_

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "common/trainer_protocol.h"
#include "megabatch/v1/megabatch.grpc.pb.h"
#include "worker/daemon/checkpoint_committer.h"
#include "worker/daemon/gpu_stats.h"
#include "worker/daemon/host_claims.h"
#include "worker/daemon/trainer_process.h"
#include "worker/daemon/user_files.h"

namespace megabatch::worker {

// The most intra-op threads a trainer is given (--threads-per-slot).
inline constexpr int kMaxThreads = 1024;
// Beside an attempt's checkpoints: the numeric environment they were made
// in ({"threads": N}), which a resume from them keeps.
inline constexpr const char* kNumericEnvironmentFile = "environment.json";

struct WorkerOptions {
  std::string name = "worker";
  int slots = 1;
  // GPU ids, one slot each (then slots == gpus.size()); a trainer sees only
  // its slot's GPU through CUDA_VISIBLE_DEVICES. Empty: CPU slots, whose
  // trainers see no GPU.
  std::vector<std::string> gpus;
  int threads_per_slot = 1;  // the trainer's intra-op threads
  // This host's cores and the claims every megabatch worker on it shares
  // (null: none). A trial whose host runs more trainer threads than cores
  // at any time records shared_cores = 1 beside its threads.
  int host_cores = 1;
  std::shared_ptr<HostClaims> host_claims;
  std::string work_dir;  // per-trial directories go here
  // Where checkpoints go, shared by every worker so that a trial resumes
  // wherever it is requeued. Empty: the coordinator's --artifacts, or, if it
  // has none, work_dir (resume only on this worker).
  std::string artifacts_dir;
  std::string trainer_path;  // the megabatch-trainer binary
  // A trial's dataset.path must lie under one of these (CheckDataPath);
  // its trial fails otherwise, before any trainer reads it.
  std::vector<std::string> data_roots;
  // Where fetched TorchScript modules are cached (user_files.h); empty:
  // "models" in DefaultCacheDir().
  std::string model_cache_dir;
  // Each trainer's data segment (RLIMIT_DATA) in bytes; 0: no limit. A
  // trial that needs more fails, and says so.
  int64_t trainer_memory = 0;
  // Keep each slot's trainer process (megabatch-trainer --serve) between
  // trials of the same sweep, so LibTorch's start-up is paid once per sweep
  // and slot instead of once per trial. A trainer that crashes still fails
  // only its own trial; the next one gets a fresh process. A slot whose
  // lease poll comes back empty stops its trainer.
  bool warm_trainers = true;
  // Where the c10d rendezvous of a data-parallel trial whose rank 0 runs
  // here is served: an address the other workers reach this machine at, and
  // the ports it may use.
  std::string rendezvous_host = "127.0.0.1";
  int rendezvous_port_first = 29500;
  int rendezvous_port_count = 100;
  // A batch of metric points is sent when it reaches max_batch_points or is
  // flush_interval old, whichever comes first.
  int max_batch_points = 2000;
  std::chrono::milliseconds flush_interval{250};
  // How long one LeaseTrial long-poll waits on the coordinator.
  std::chrono::milliseconds lease_wait{2000};
  // Stop once no slot has held a trial for this long (a pilot job gives its
  // node back when the queue stays empty); 0: never.
  std::chrono::seconds exit_when_idle{0};
};

// One line of trainer stdout, decoded. Exposed for tests.
struct TrainerLine {
  std::vector<v1::MetricPoint> points;
  // "completed" | "diverged" | "failed" (the end), "checkpoint", or ""
  // (metrics).
  std::string event;
  std::string message;
  bool retry = true;  // "failed": false when a retry would fail the same way
  // For "checkpoint": the step it holds and its file.
  int64_t checkpoint_step = 0;
  std::string checkpoint_path;
};
// Parses {"step": s, "metrics": {...}} or {"event": ..., "message": ...}.
// INVALID_ARGUMENT for anything else.
Result<TrainerLine> ParseTrainerLine(const std::string& line);

// Thread-safe: Run() on one thread, Stop() from any.
class Worker {
 public:
  Worker(std::shared_ptr<grpc::Channel> channel, WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Registers (retrying while the coordinator is unreachable), then serves
  // until Stop(). Returns the reason it stopped early, if any.
  Status Run();
  // Kills running trainers and makes Run() return. Idempotent.
  void Stop();
  // A clean end (SIGTERM: Slurm's preemption or time limit, scancel, a
  // Kubernetes pod deletion): takes no more leases, asks each running
  // trainer to checkpoint at its next step and stop (SIGUSR1), and gives
  // each trial back to the coordinator as preempted, so it is queued again
  // at once and resumes from that checkpoint without counting against its
  // retries. Trainers still running after `grace` are killed and their
  // trials given back from their last committed checkpoint; then Run()
  // returns. Idempotent.
  void Drain(std::chrono::seconds grace);

 private:
  struct Running {
    pid_t pid = 0;
    int64_t lease_id = 0;
    bool stop_requested = false;  // cancelled, or the lease was lost
  };

  // A slot's trainer kept between trials, and what it was started for.
  struct WarmTrainer {
    std::unique_ptr<TrainerProcess> process;
    std::string key;  // sweep, threads and GPU
  };

  // What one attempt (lease) of a trial needs on disk before its trainer
  // starts, and which trainer may run it.
  struct Attempt {
    std::filesystem::path trial_dir;  // its checkpoints, all attempts
    std::filesystem::path lease_dir;  // this attempt's checkpoints
    std::string config_path;
    std::string resume_from;  // the committed checkpoint; empty: from scratch
    std::string gpu;          // CUDA_VISIBLE_DEVICES of its slot
    // Intra-op threads: the slot's, or on a resume those its checkpoint was
    // made with, so that the resumed trial is bit-identical (more than the
    // slot's marks it as sharing cores).
    int threads = 1;
    bool reusable = false;  // may run in, and leave, a warm trainer
    std::string key;        // what a warm trainer must have started for
  };
  // What the trainer's output said about an attempt, and the points not
  // yet sent.
  struct AttemptOutput {
    static constexpr size_t kStderrTailBytes = 8192;
    std::string event;  // the last event line's (protocol::kCompleted...)
    std::string message;
    bool retry = true;
    TailBuffer stderr_tail{kStderrTailBytes};
    std::vector<v1::MetricPoint> pending;
    bool lease_ok = true;   // false once the coordinator refused the lease
    bool reachable = true;  // the coordinator answered the last flush
    bool AllStored() const { return pending.empty() && lease_ok && reachable; }
    // A kept trainer's trial is over at its "completed" or "diverged" line;
    // any other trainer's at the end of its output (its stderr after a
    // "failed" line explains the failure).
    bool TrialOver(bool reusable) const {
      return reusable &&
             (event == protocol::kCompleted || event == protocol::kDiverged);
    }
  };

  // Registers, retrying while the coordinator is unreachable.
  Result<v1::RegisterWorkerResponse> Register();
  void HeartbeatLoop();
  // This worker's heartbeat now: its running leases and GPU readings.
  v1::HeartbeatRequest BuildHeartbeat();
  // Acts on a heartbeat's answer, sent alone or folded into a report.
  void Beaten(const google::protobuf::RepeatedField<int64_t>& stop_trial_ids);
  void SlotLoop(int slot);
  // Runs one leased trial to the end, in `warm`'s trainer when it fits,
  // and reports its outcome: PrepareAttempt, start or reuse the trainer,
  // PumpOutput, drain what is left, ReportOutcome.
  void RunTrial(int slot, const v1::LeaseTrialResponse& leased,
                WarmTrainer* warm);
  // Writes the attempt's config and finds its resume point (at or before
  // the lease's resume_max_step); an error's message is the failure to
  // report, and `*input_changed` says it was a data file not as submitted.
  Result<Attempt> PrepareAttempt(bool* input_changed, int slot,
                                 const v1::LeaseTrialResponse& leased);
  // Reads the trainer's stdout and stderr until the trial is over: sends
  // points in batches, commits checkpoints once their points are stored,
  // records threads and core sharing, stops the trainer if the lease is lost.
  void PumpOutput(const v1::TrialLease& lease, const Attempt& attempt,
                  TrainerProcess& trainer, CheckpointCommitter* checkpoints,
                  AttemptOutput* out);
  // Reports how the attempt ended, from its event or the exit status.
  void ReportOutcome(const v1::TrialLease& lease, const Attempt& attempt,
                     const AttemptOutput& out, int wstatus, bool kept);
  // Sends buffered points. `lease_ok` false: the lease is gone
  // (ABORTED/NOT_FOUND), the points dropped. Kept for a retry when the
  // coordinator was not `reachable`, and then `full` when it said
  // RESOURCE_EXHAUSTED.
  struct Flushed {
    bool lease_ok = true;
    bool reachable = true;
    bool full = false;
  };
  Flushed Flush(const v1::TrialLease& lease,
                std::vector<v1::MetricPoint>* points);
  // `retry` false: the trial fails now, without retries (its input is
  // wrong).
  void FinishTrial(const v1::TrialLease& lease, v1::TrialState outcome,
                   const std::string& message, const std::string& stderr_tail,
                   bool retry = true);
  // Streams module `sha256` from the coordinator into `sink`.
  Status FetchModel(const std::string& sha256,
                    const std::function<Status(std::string_view)>& sink);
  // The threads recorded in an attempt's checkpoint directory
  // (kNumericEnvironmentFile); nullopt, with a warning, when none are.
  static std::optional<int> RecordedThreads(
      const std::filesystem::path& lease_dir);
  // Whether the host's trainers run more threads than it has cores now.
  bool HostOversubscribed() const;
  // Requests the stop of one trial's trainer (SIGKILL to its process group).
  void StopTrial(int64_t trial_id);  // every rank of it on this worker
  bool stopping() const { return stopping_.load(); }
  bool draining() const { return draining_.load(); }
  // Returns a lease the worker will not run (draining or stopping) to the
  // coordinator as preempted: queued again at once, no retry counted.
  void GiveBack(const v1::TrialLease& lease, const std::string& why);
  // Waits up to `d` unless Stop() is called; returns stopping().
  bool WaitFor(std::chrono::milliseconds d);

  std::unique_ptr<v1::WorkerService::Stub> stub_;
  std::unique_ptr<GpuStats> gpu_stats_;  // null without GPUs or NVML
  std::vector<int32_t> gpu_indices_;
  const WorkerOptions options_;
  // Where trial checkpoints go; set by Register().
  std::string checkpoint_root_;
  UserFiles user_files_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> draining_{false};
  // Slots holding a lease now (from the lease until its trial is over).
  std::atomic<int> holding_{0};
  // Steady-clock ns: when Drain() gives up on its trainers.
  std::atomic<int64_t> drain_deadline_ns_{0};
  // Set at registration, and again if the coordinator forgets this worker
  // (a database restored from a backup).
  std::atomic<int64_t> worker_id_{0};
  // How long older checkpoints are kept (the coordinator says).
  std::chrono::milliseconds checkpoint_history_{0};  // set before threads
  std::chrono::milliseconds heartbeat_interval_{1000};
  // When the coordinator last took a heartbeat (steady clock, ns): a report
  // carries one when half an interval has passed, and HeartbeatLoop sends
  // one only when none went for an interval and a half, so a busy worker's
  // heartbeats cost no calls of their own.
  std::atomic<int64_t> last_beat_ns_{0};

  Mutex mu_;
  CondVar stop_cv_{&mu_};
  // By (trial id, rank): a worker may run several ranks of one trial.
  std::map<std::pair<int64_t, int32_t>, Running> running_ GUARDED_BY(mu_);
};

}  // namespace megabatch::worker

#endif  // MEGABATCH_WORKER_DAEMON_WORKER_H_
