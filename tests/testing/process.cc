#include "tests/testing/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "tests/testing/temp_dir.h"

extern char** environ;

namespace megabatch::testing {
namespace {

pid_t Spawn(const std::vector<std::string>& argv, const std::string& out_path,
            const std::string& err_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null",
                                   O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot spawn " + argv[0]);
  return pid;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int WaitPid(pid_t pid, std::chrono::milliseconds timeout, bool* reaped) {
  int status = -1;
  bool done =
      WaitUntil([&] { return waitpid(pid, &status, WNOHANG) == pid; }, timeout);
  if (!done) return -1;
  *reaped = true;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

Process::Process(const std::vector<std::string>& argv,
                 const std::string& log_path)
    : log_path_(log_path) {
  pid_ = Spawn(argv, log_path, log_path);
}

Process::~Process() {
  if (!reaped_) Kill(SIGKILL);
}

void Process::Kill(int signal) {
  if (reaped_) return;
  kill(pid_, signal);
  if (signal == SIGKILL) {
    int status;
    waitpid(pid_, &status, 0);
    reaped_ = true;
  }
}

int Process::Wait(std::chrono::milliseconds timeout) {
  return WaitPid(pid_, timeout, &reaped_);
}

std::string Process::Log() const { return ReadFile(log_path_); }

CommandResult RunCommand(const std::vector<std::string>& argv,
                         std::chrono::seconds timeout) {
  TempDir dir;
  std::string out = dir.File("out"), err = dir.File("err");
  pid_t pid = Spawn(argv, out, err);
  bool reaped = false;
  CommandResult r;
  r.exit_code = WaitPid(pid, timeout, &reaped);
  if (!reaped) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  r.out = ReadFile(out);
  r.err = ReadFile(err);
  return r;
}

std::vector<pid_t> FindProcesses(const std::string& needle) {
  std::vector<pid_t> pids;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = ReadFile((entry.path() / "cmdline").string());
    for (char& c : cmdline) {
      if (c == '\0') c = ' ';
    }
    // A zombie has an empty command line and is not running.
    if (cmdline.find(needle) != std::string::npos)
      pids.push_back(std::stoi(name));
  }
  return pids;
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    throw std::runtime_error("bind");
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

bool WaitUntil(const std::function<bool()>& condition,
               std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::vector<std::unique_ptr<Process>> StartWorkers(
    const std::string& worker_bin, const std::string& address,
    const std::string& dir, int count, const std::vector<std::string>& flags,
    int first) {
  std::vector<std::unique_ptr<Process>> workers;
  for (int i = first; i < first + count; ++i) {
    const std::string name = "worker-" + std::to_string(i);
    std::vector<std::string> argv{
        worker_bin, "--coordinator", address,         "--name", name, "--slots",
        "1",        "--work-dir",    dir + "/" + name};
    if (std::find(flags.begin(), flags.end(), "--threads-per-slot") ==
        flags.end()) {
      argv.insert(argv.end(), {"--threads-per-slot", "1"});
    }
    argv.insert(argv.end(), flags.begin(), flags.end());
    workers.push_back(
        std::make_unique<Process>(argv, dir + "/" + name + ".log"));
  }
  return workers;
}

}  // namespace megabatch::testing
