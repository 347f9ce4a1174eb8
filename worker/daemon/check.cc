#include "worker/daemon/check.h"

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "worker/daemon/gpu_stats.h"
#include "worker/daemon/trainer_process.h"

extern char** environ;

namespace megabatch::worker {
namespace {

using nlohmann::json;

// Runs the trainer with `args` and returns its stdout (stderr read and
// dropped) and exit status, -1 when it did not run or did not exit.
std::pair<std::string, int> RunTrainer(const std::string& trainer,
                                       const std::vector<std::string>& args) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  auto process = TrainerProcess::Spawn(trainer, args, env);
  if (!process.ok()) return {"", -1};
  (*process)->CloseStdin();
  std::string text;
  char buf[4096];
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    pollfd fds[2] = {
        {(*process)->stdout_fd(), static_cast<short>(out_open ? POLLIN : 0), 0},
        {(*process)->stderr_fd(), static_cast<short>(err_open ? POLLIN : 0),
         0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n <= 0) {
        (i == 0 ? out_open : err_open) = false;
      } else if (i == 0) {
        text.append(buf, static_cast<size_t>(n));
      }
    }
  }
  const int status = (*process)->Reap();
  return {text, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

// Creates `dir` if needed and writes and removes a file in it.
std::string Writable(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return "cannot create it: " + ec.message();
  const auto probe = std::filesystem::path(dir) /
                     (".megabatch-check-" + std::to_string(getpid()));
  { std::ofstream(probe) << "ok"; }
  if (!std::filesystem::exists(probe, ec)) return "cannot write files in it";
  std::filesystem::remove(probe, ec);
  return "";
}

}  // namespace

int RunCheck(const CheckOptions& o, std::ostream& out) {
  std::vector<std::string> problems;
  out << "trainer: " << o.trainer_path << " (" << o.threads
      << " threads per slot)\n";
  auto [text, status] = RunTrainer(
      o.trainer_path, {"--check", "--threads", std::to_string(o.threads)});
  const json found = json::parse(text, nullptr, false);
  if (!found.is_object()) {
    problems.push_back("megabatch-trainer --check did not run (exit " +
                       std::to_string(status) + "): trials could not start");
  } else {
    out << "  libtorch " << found.value("libtorch", "?") << ", "
        << found.value("cpu_cores", 0) << " CPU cores, "
        << found.value("blas", "?") << "\n";
    const json& cuda = found["cuda"];
    out << "  cuda: " << (cuda.value("available", false) ? "yes" : "no") << ", "
        << cuda.value("devices", 0) << " device(s), cudnn "
        << (cuda.value("cudnn", false) ? "yes" : "no");
    if (cuda.contains("bf16"))
      out << ", bf16 " << (cuda["bf16"].get<bool>() ? "yes" : "no");
    out << "; c10d gloo " << (found.value("gloo", false) ? "yes" : "no")
        << ", nccl " << (found.value("nccl", false) ? "yes" : "no") << "\n";
    for (const json& s : found["smoke"]) {
      out << "  smoke training " << s["device"].get<std::string>() << " "
          << s["precision"].get<std::string>() << ": ";
      if (s.value("ok", false)) {
        out << "ok, loss " << s["first_loss"].get<double>() << " -> "
            << s["last_loss"].get<double>() << ", "
            << static_cast<int64_t>(s["samples_per_second"].get<double>())
            << " samples/s\n";
      } else {
        out << "FAILED\n";
      }
    }
    out << "  LAMB optimizer step: "
        << static_cast<int64_t>(found.value("lamb_parameters_per_second", 0.0) /
                                1e6)
        << "M parameters/s\n";
    for (const json& p : found["problems"])
      problems.push_back(p.get<std::string>());
  }
  if (auto gpus = GpuStats::Open()) {
    std::vector<int32_t> indices(16);
    for (int32_t i = 0; i < 16; ++i) indices[i] = i;
    for (const GpuReading& g : gpus->Read(indices)) {
      out << "GPU " << g.index << ": " << g.memory_total_bytes / (1 << 20)
          << " MiB, " << g.memory_used_bytes / (1 << 20)
          << " MiB used (NVML)\n";
    }
  } else {
    out << "GPUs: none that NVML reports\n";
  }
  const bool reachable = o.channel->WaitForConnected(
      std::chrono::system_clock::now() + std::chrono::seconds(5));
  out << "coordinator " << o.coordinator << ": "
      << (reachable ? "reachable" : "UNREACHABLE") << "\n";
  if (!reachable) {
    problems.push_back(
        "coordinator " + o.coordinator +
        " unreachable within 5 s (is it running, and is --coordinator right?)");
  }
  for (const auto& [what, dir] :
       {std::pair<std::string, std::string>{"--work-dir", o.work_dir},
        {"--artifacts", o.artifacts_dir}}) {
    if (dir.empty()) continue;
    const std::string why = Writable(dir);
    out << what << " " << dir << ": " << (why.empty() ? "writable" : why)
        << "\n";
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
