#include "worker/daemon/check.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "worker/daemon/gpu_stats.h"

extern char** environ;

namespace megabatch::worker {
namespace {

using nlohmann::json;

// Runs argv and returns its stdout (stderr discarded) and exit status. With
// posix_spawn, as the worker starts trainers: the process already runs
// gRPC's threads, and nothing may allocate between fork and exec.
std::pair<std::string, int> Capture(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe(fds) != 0) return {"", -1};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; spawned == 0 && (n = read(fds[0], buf, sizeof(buf))) > 0;) text.append(buf, n);
  close(fds[0]);
  int status = 0;
  if (spawned != 0 || waitpid(pid, &status, 0) != pid) return {text, -1};
  return {text, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

// Creates `dir` if needed and writes and removes a file in it.
std::string Writable(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return "cannot create it: " + ec.message();
  const auto probe = std::filesystem::path(dir) / (".megabatch-check-" + std::to_string(getpid()));
  { std::ofstream(probe) << "ok"; }
  if (!std::filesystem::exists(probe, ec)) return "cannot write files in it";
  std::filesystem::remove(probe, ec);
  return "";
}

}  // namespace

int RunCheck(const CheckOptions& o, std::ostream& out) {
  std::vector<std::string> problems;
  out << "trainer: " << o.trainer_path << " (" << o.threads << " threads per slot)\n";
  auto [text, status] =
      Capture({o.trainer_path, "--check", "--threads", std::to_string(o.threads)});
  const json found = json::parse(text, nullptr, false);
  if (!found.is_object()) {
    problems.push_back("megabatch-trainer --check did not run (exit " + std::to_string(status) +
                       "): trials could not start");
  } else {
    out << "  libtorch " << found.value("libtorch", "?") << ", "
        << found.value("cpu_cores", 0) << " CPU cores, " << found.value("blas", "?") << "\n";
    const json& cuda = found["cuda"];
    out << "  cuda: " << (cuda.value("available", false) ? "yes" : "no") << ", "
        << cuda.value("devices", 0) << " device(s), cudnn "
        << (cuda.value("cudnn", false) ? "yes" : "no");
    if (cuda.contains("bf16")) out << ", bf16 " << (cuda["bf16"].get<bool>() ? "yes" : "no");
    out << "; c10d gloo " << (found.value("gloo", false) ? "yes" : "no") << ", nccl "
        << (found.value("nccl", false) ? "yes" : "no") << "\n";
    for (const json& s : found["smoke"]) {
      out << "  smoke training " << s["device"].get<std::string>() << " "
          << s["precision"].get<std::string>() << ": ";
      if (s.value("ok", false)) {
        out << "ok, loss " << s["first_loss"].get<double>() << " -> "
            << s["last_loss"].get<double>() << ", "
            << static_cast<int64_t>(s["samples_per_second"].get<double>()) << " samples/s\n";
      } else {
        out << "FAILED\n";
      }
    }
    out << "  LAMB optimizer step: "
        << static_cast<int64_t>(found.value("lamb_parameters_per_second", 0.0) / 1e6)
        << "M parameters/s\n";
    for (const json& p : found["problems"]) problems.push_back(p.get<std::string>());
  }
  if (auto gpus = GpuStats::Open()) {
    std::vector<int32_t> indices(16);
    for (int32_t i = 0; i < 16; ++i) indices[i] = i;
    for (const GpuReading& g : gpus->Read(indices)) {
      out << "GPU " << g.index << ": " << g.memory_total_bytes / (1 << 20) << " MiB, "
          << g.memory_used_bytes / (1 << 20) << " MiB used (NVML)\n";
    }
  } else {
    out << "GPUs: none that NVML reports\n";
  }
  const bool reachable =
      o.channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5));
  out << "coordinator " << o.coordinator << ": " << (reachable ? "reachable" : "UNREACHABLE")
      << "\n";
  if (!reachable) {
    problems.push_back("coordinator " + o.coordinator +
                       " unreachable within 5 s (is it running, and is --coordinator right?)");
  }
  for (const auto& [what, dir] : {std::pair<std::string, std::string>{"--work-dir", o.work_dir},
                                  {"--artifacts", o.artifacts_dir}}) {
    if (dir.empty()) continue;
    const std::string why = Writable(dir);
    out << what << " " << dir << ": " << (why.empty() ? "writable" : why) << "\n";
    if (!why.empty()) problems.push_back(what + " " + dir + ": " + why);
  }
  if (problems.empty()) {
    out << "check passed: this machine can run megabatch trials\n";
    return 0;
  }
  for (const auto& p : problems) out << "PROBLEM: " << p << "\n";
  return 1;
}

}  // namespace megabatch::worker
