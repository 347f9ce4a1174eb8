// One megabatch-trainer child of the worker: spawned in a process group of
// its own with pipes for stdin, stdout and stderr, and killed (the whole
// group) and reaped by its destructor if it is still there. LibTorch-free.
// Thread-compatible; Kill() may be called from any thread.
#ifndef MEGABATCH_WORKER_DAEMON_TRAINER_PROCESS_H_
#define MEGABATCH_WORKER_DAEMON_TRAINER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/daemon/line_reader.h"

namespace megabatch::worker {

class TrainerProcess {
 public:
  // Starts `path` with `args` (argv[1...]) and the environment `env`
  // ("NAME=value" each). UNAVAILABLE with the reason when it cannot.
  static Result<std::unique_ptr<TrainerProcess>> Spawn(
      const std::string& path, const std::vector<std::string>& args,
      const std::vector<std::string>& env);
  ~TrainerProcess();
  TrainerProcess(const TrainerProcess&) = delete;
  TrainerProcess& operator=(const TrainerProcess&) = delete;

  pid_t pid() const { return pid_; }
  int stdout_fd() const { return out_; }
  int stderr_fd() const { return err_; }
  // Writes `line` and a newline to its stdin; false when it is gone.
  bool Send(const std::string& line);
  // Closes its stdin: a --serve trainer exits after its current trial.
  void CloseStdin();
  // SIGKILL to its process group (whatever it started goes too).
  void Kill();
  // Waits for it to exit and returns its wait status (the same again on a
  // later call).
  int Reap();
  bool reaped() const { return reaped_; }

  // Its stdout, cut into lines; a warm trainer's partial line carries over.
  LineReader stdout_lines;

 private:
  TrainerProcess() = default;

  pid_t pid_ = 0;
  int in_ = -1, out_ = -1, err_ = -1;
  bool reaped_ = false;
  int wstatus_ = 0;
};

}  // namespace megabatch::worker

#endif  // MEGABATCH_WORKER_DAEMON_TRAINER_PROCESS_H_
