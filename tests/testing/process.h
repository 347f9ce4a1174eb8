// Helpers for end-to-end tests: child processes that are killed when the
// test ends, commands whose output is captured, free loopback ports, and
// waiting on a condition with a deadline (never a bare sleep).
#ifndef MEGABATCH_TESTS_TESTING_PROCESS_H_
#define MEGABATCH_TESTS_TESTING_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace megabatch::testing {

// A child process with stdout and stderr appended to `log_path`. The
// destructor kills it (SIGKILL) if it is still running. Thread-compatible.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& log_path);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // Sends `signal`; with SIGKILL also reaps the child.
  void Kill(int signal);
  // Waits up to `timeout` for the child to exit; its exit status or -1.
  int Wait(std::chrono::milliseconds timeout);
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  std::string log_path_;
  bool reaped_ = false;
};

// `count` megabatch-worker processes (`worker_bin`) dialing `address`, named
// worker-F, worker-F+1, ... (F = `first`), with one slot of one thread each;
// each has its work dir DIR/worker-I and its log DIR/worker-I.log; `flags`
// are added to each command line (one intra-op thread each unless they
// say --threads-per-slot).
std::vector<std::unique_ptr<Process>> StartWorkers(
    const std::string& worker_bin, const std::string& address,
    const std::string& dir, int count,
    const std::vector<std::string>& flags = {}, int first = 0);

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs argv to completion (bounded by `timeout`), capturing its output.
CommandResult RunCommand(
    const std::vector<std::string>& argv,
    std::chrono::seconds timeout = std::chrono::seconds(600));

// The running processes that have `needle` in their command line.
std::vector<pid_t> FindProcesses(const std::string& needle);

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreePort();

// Polls `condition` every 50 ms until it holds or `timeout` passes.
bool WaitUntil(const std::function<bool()>& condition,
               std::chrono::milliseconds timeout);

}  // namespace megabatch::testing

#endif  // MEGABATCH_TESTS_TESTING_PROCESS_H_
