// megabatch-trainer --check [--dataset DIR] [--threads N]: prints what a
// trainer here sees and can do as one JSON object (worker/trainer/check.h);
// exit 0 when nothing would make trials fail, else 1.
//
// megabatch-trainer --config trial.json [--resume CHECKPOINT]: trains one
// trial (continuing from a checkpoint) and prints its metrics, checkpoints
// and, last, how it ended as JSON lines on stdout; its exit code says the
// same. Both are defined in common/trainer_protocol.h.
//
// Either of these takes --memory-limit BYTES: its memory (RLIMIT_DATA) is
// limited from its first trial on (the worker's --trainer-memory).
//
// megabatch-trainer --serve [--work-dir DIR]: a warm trainer. Reads one
// request per stdin line (protocol::ServeRequest) and runs each trial as
// --config would, its event line last; LibTorch's start-up is paid once. Every
// trial seeds and sizes everything it uses, so its metrics are the bits a fresh
// process would print. Exits 0 at the end of stdin, and after a trial that did
// not complete or diverge with that trial's exit code (its process state is not
// trusted for another trial).
#include <malloc.h>
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/trainer_protocol.h"
#include "worker/trainer/check.h"
#include "worker/trainer/trainer.h"

namespace {

using megabatch::protocol::kExitCompleted;
using megabatch::protocol::kExitDiverged;
using megabatch::protocol::kExitFailed;
using megabatch::protocol::kExitUsage;

// Writes one protocol line. Stdout is the worker's pipe: when a write
// fails (EPIPE: SIGPIPE is ignored, see main) the worker is gone, and a
// trainer that trained on would only hold its cores, so it exits at once.
void WriteLine(const std::string& line) {
  std::cout << line << std::endl;
  if (!std::cout) {
    std::cerr << "megabatch-trainer: stdout is closed (its worker is gone); "
                 "exiting\n";
    std::_Exit(megabatch::protocol::kExitFailed);
  }
}

class StdoutSink : public megabatch::trainer::MetricSink {
 public:
  void Log(int64_t step, const megabatch::trainer::Metrics& metrics) override {
    WriteLine(megabatch::protocol::MetricsLine(step, metrics));
  }
  void Checkpointed(int64_t step, const std::string& path) override {
    WriteLine(megabatch::protocol::CheckpointLine(step, path));
  }
};

void PrintEvent(const std::string& event, const std::string& message,
                bool retry = true) {
  WriteLine(megabatch::protocol::EventLine(event, message, retry));
}

// Reports a trial that could not run. A config or data file that does not
// fit (INVALID_ARGUMENT) fails the trial without retries: a retry would
// fail the same way. A missing file (NOT_FOUND) may be this host's alone.
int Failed(const megabatch::Status& status) {
  PrintEvent(megabatch::protocol::kFailed, status.ToString(),
             status.code() != megabatch::StatusCode::kInvalidArgument);
  std::cerr << status.ToString() << "\n";
  return kExitFailed;
}

int Usage(const std::string& error) {
  std::cerr
      << "megabatch-trainer: " << error << "\n"
      << "usage: megabatch-trainer --config TRIAL.json [--resume CHECKPOINT] "
         "[--memory-limit BYTES]\n"
      << "       megabatch-trainer --serve [--work-dir DIR] [--memory-limit "
         "BYTES]   (requests on stdin)\n"
      << "       megabatch-trainer --check [--dataset DIR] [--threads N]\n";
  return kExitUsage;
}

// Limits this process's data segment (heap and private mappings: every
// tensor on the CPU) to `bytes` from now on, once, after making OpenBLAS
// take the buffers `threads` threads use: it retries forever, instead of
// failing, when it cannot get one under the limit.
void LimitMemory(int64_t bytes, int threads) {
  static bool limited = false;
  if (bytes <= 0 || limited) return;
  limited = true;
  torch::NoGradGuard no_grad;
  torch::set_num_threads(threads);
  torch::mm(torch::ones({1024, 1024}), torch::ones({1024, 1024}));
  torch::bmm(torch::ones({2 * threads, 256, 256}),
             torch::ones({2 * threads, 256, 256}));
  const rlimit limit{static_cast<rlim_t>(bytes), static_cast<rlim_t>(bytes)};
  if (setrlimit(RLIMIT_DATA, &limit) != 0) {
    std::cerr << "megabatch-trainer: --memory-limit: " << std::strerror(errno)
              << "\n";
  }
}

// Trains the trial of `config_path`; its exit code. Its memory is limited
// to `memory_limit` bytes (0: no limit).
int RunOne(const std::string& config_path, const std::string& resume_path,
           int64_t memory_limit) {
  try {
    std::ifstream in(config_path);
    if (!in) return Usage("cannot read config file " + config_path);
    nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
    if (doc.is_discarded()) {
      return Usage("config file " + config_path + " is not valid JSON");
    }
    auto config = megabatch::trainer::ParseTrialConfig(doc);
    if (!config.ok()) return Usage(config.status().message());
    LimitMemory(memory_limit, config->threads);
    auto task = megabatch::trainer::MakeTask(*config);
    if (!task.ok()) return Failed(task.status());
    StdoutSink sink;
    auto result =
        megabatch::trainer::RunTrial(*config, **task, &sink, resume_path);
    if (!result.ok()) return Failed(result.status());
    if (result->outcome == megabatch::trainer::Outcome::kDiverged) {
      PrintEvent(megabatch::protocol::kDiverged, result->message);
      return kExitDiverged;
    }
    if (result->outcome == megabatch::trainer::Outcome::kPreempted) {
      PrintEvent(megabatch::protocol::kPreempted, result->message);
      return kExitCompleted;
    }
    PrintEvent(megabatch::protocol::kCompleted, result->message);
    return kExitCompleted;
  } catch (const megabatch::trainer::InputError& e) {
    // The user's model or data does not fit (docs/models.md): no retries.
    PrintEvent(megabatch::protocol::kFailed, e.what(), /*retry=*/false);
    std::cerr << "megabatch-trainer: " << e.what() << "\n";
    return kExitFailed;
  } catch (const std::exception& e) {
    PrintEvent(megabatch::protocol::kFailed, e.what());
    std::cerr << "megabatch-trainer: " << e.what() << "\n";
    return kExitFailed;
  }
}

}  // namespace

int main(int argc, char** argv) {
  // A training step frees and reallocates the same large tensors every step.
  // By default glibc serves them with mmap and returns them (munmap, heap
  // trim), so every step faults its memory in again, zero-filled: on VMs that
  // costs more than the arithmetic (8x at CNN batch 4096 here, see
  // bench/train_throughput.py). One process runs one trial at a time, so
  // keep freed memory for reuse instead.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);
  // A write to a closed pipe or socket is an error to handle, not a signal
  // that kills: a data-parallel rank whose peer died reports the failed
  // collective, and a trainer whose worker died exits at its next line
  // (WriteLine).
  std::signal(SIGPIPE, SIG_IGN);
  // The worker's drain: stop at the next step with a checkpoint. The worker
  // starts trainers with SIGUSR1 blocked; one that came meanwhile is
  // delivered here, once the handler is in place.
  std::signal(SIGUSR1, [](int) { megabatch::trainer::RequestPreemption(); });
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  sigprocmask(SIG_UNBLOCK, &usr1, nullptr);
  std::string config_path, resume_path;
  std::string check_dataset = "/usr/share/datasets/fashion-mnist";
  bool check = false, serve = false;
  int check_threads = 1;
  int64_t memory_limit = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--check") == 0) {
      check = true;
    } else if (std::strcmp(argv[i], "--dataset") == 0 && i + 1 < argc) {
      check_dataset = argv[++i];
    } else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      check_threads = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--serve") == 0) {
      serve = true;
    } else if (std::strcmp(argv[i], "--work-dir") == 0 && i + 1 < argc) {
      // Where it runs (anything it leaves, a core file say, goes there); the
      // worker passes its own, which also names the trainer's worker in ps.
      if (chdir(argv[++i]) != 0) {
        return Usage(std::string("--work-dir ") + argv[i] + ": " +
                     std::strerror(errno));
      }
    } else if (std::strcmp(argv[i], "--memory-limit") == 0 && i + 1 < argc) {
      memory_limit = std::atoll(argv[++i]);
    } else if (std::strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
      config_path = argv[++i];
    } else if (std::strcmp(argv[i], "--help") == 0) {
      return Usage("trains one trial and prints its metrics as JSON lines"), 0;
    } else if (std::strcmp(argv[i], "--resume") == 0 && i + 1 < argc) {
      resume_path = argv[++i];
    } else {
      return Usage(std::string("unknown argument ") + argv[i]);
    }
  }
  if (check) {
    nlohmann::json findings =
        megabatch::trainer::RunSelfCheck(check_dataset, check_threads);
    std::cout << findings.dump() << std::endl;
    return findings["problems"].empty() ? kExitCompleted : kExitFailed;
  }
  if (serve) {
    std::string line;
    while (std::getline(std::cin, line)) {
      auto request = megabatch::protocol::ParseServeRequest(line);
      if (!request.ok()) return Usage("--serve: " + request.status().message());
      int code = RunOne(request->config, request->resume, memory_limit);
      if (code != kExitCompleted && code != kExitDiverged) return code;
    }
    return kExitCompleted;
  }
  if (config_path.empty()) return Usage("--config is required");
  return RunOne(config_path, resume_path, memory_limit);
}
