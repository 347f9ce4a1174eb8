#include "worker/daemon/trainer_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace megabatch::worker {
namespace {

void CloseFd(int* fd) {
  if (*fd >= 0) ::close(*fd);
  *fd = -1;
}

}  // namespace

Result<std::unique_ptr<TrainerProcess>> TrainerProcess::Spawn(
    const std::string& path, const std::vector<std::string>& args,
    const std::vector<std::string>& env) {
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 ||
      pipe2(err, O_CLOEXEC) != 0) {
    const int error = errno;
    for (int* fd : {&in[0], &in[1], &out[0], &out[1], &err[0], &err[1]})
      CloseFd(fd);
    return UnavailableError(std::string("pipe: ") + std::strerror(error));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own process group, so that one kill reaches everything it started.
  // SIGPIPE back to its default: the worker ignores it, and an ignored
  // signal survives exec. A child that inherited it would write on into a
  // closed pipe after its worker died. (megabatch-trainer ignores it itself
  // and exits when a line cannot be written.)
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  // SIGUSR1 (the drain's "checkpoint and stop") blocked until the trainer
  // has its handler, so that one sent while it loads LibTorch waits instead
  // of killing it. SIGTERM and SIGINT stay blocked, as in the worker: a
  // scheduler that signals every process of a job (Slurm's scancel, systemd
  // stopping a unit) reaches the worker, which drains its trainers; they
  // end when it says, or by SIGKILL.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGUSR1);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  posix_spawnattr_setsigmask(&attr, &mask);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
                                      POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setpgroup(&attr, 0);
  // Everything is built before the spawn: nothing allocates between fork
  // and exec in this threaded process.
  std::vector<std::string> argv_storage = {path};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv, envp;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_storage = env;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, path.c_str(), &actions, &attr, argv.data(),
                       envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  for (int* fd : {&in[0], &out[1], &err[1]}) CloseFd(fd);
  if (rc != 0) {
    for (int* fd : {&in[1], &out[0], &err[0]}) CloseFd(fd);
    return UnavailableError("cannot start trainer " + path + ": " +
                            std::strerror(rc));
  }
  std::unique_ptr<TrainerProcess> p(new TrainerProcess());
  p->pid_ = pid;
  p->in_ = in[1];
  p->out_ = out[0];
  p->err_ = err[0];
  return p;
}

TrainerProcess::~TrainerProcess() {
  CloseFd(&in_);
  CloseFd(&out_);
  CloseFd(&err_);
  if (!reaped_) {
    Kill();
    Reap();
  }
}

bool TrainerProcess::Send(const std::string& line) {
  if (in_ < 0) return false;
  std::string bytes = line + "\n";
  size_t done = 0;
  while (done < bytes.size()) {
    // The worker ignores SIGPIPE (main.cc): a trainer that is gone is EPIPE.
    ssize_t n = ::write(in_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

void TrainerProcess::CloseStdin() { CloseFd(&in_); }

void TrainerProcess::Kill() {
  if (!reaped_ && pid_ > 0) ::kill(-pid_, SIGKILL);
}

int TrainerProcess::Reap() {
  if (reaped_) return wstatus_;
  while (::waitpid(pid_, &wstatus_, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  return wstatus_;
}

}  // namespace megabatch::worker
