// TrainerProcess: a child with pipes for stdin, stdout and stderr in its own
// process group: what is sent arrives, output is read back, Kill takes the
// whole group, Reap gives the same status every time, and a missing binary
// is UNAVAILABLE.
#include "worker/daemon/trainer_process.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::worker {
namespace {

// Everything readable from `fd` until `want` appears or 10 s pass.
std::string ReadUntil(int fd, const std::string& want) {
  std::string out;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (out.find(want) == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

TEST(TrainerProcessTest, LinesSentArriveAndItsOutputComesBack) {
  auto p = TrainerProcess::Spawn("/bin/sh",
                                 {"-c",
                                  "read line; echo \"got $line\"; "
                                  "echo \"$MEGABATCH_X\" >&2; cat >/dev/null"},
                                 {"MEGABATCH_X=from-env"});
  ASSERT_OK(p);
  EXPECT_GT((*p)->pid(), 0);
  ASSERT_TRUE((*p)->Send("hello"));
  EXPECT_EQ(ReadUntil((*p)->stdout_fd(), "\n"), "got hello\n");
  EXPECT_EQ(ReadUntil((*p)->stderr_fd(), "\n"), "from-env\n");
  // Closing stdin ends `cat`, and with it the child.
  (*p)->CloseStdin();
  const int status = (*p)->Reap();
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE((*p)->reaped());
  EXPECT_EQ((*p)->Reap(), status);  // the same again
  EXPECT_FALSE((*p)->Send("gone"));
}

TEST(TrainerProcessTest, KillTakesWhatTheChildStartedToo) {
  testing::TempDir dir;
  const std::string grandchild = dir.File("grandchild.pid");
  auto p = TrainerProcess::Spawn(
      "/bin/sh", {"-c", "sleep 600 & echo $! > " + grandchild + "; wait"}, {});
  ASSERT_OK(p);
  pid_t sleeper = 0;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        FILE* f = std::fopen(grandchild.c_str(), "r");
        if (f == nullptr) return false;
        const bool read = std::fscanf(f, "%d", &sleeper) == 1;
        std::fclose(f);
        return read && sleeper > 0;
      },
      std::chrono::seconds(10)));
  (*p)->Kill();
  const int status = (*p)->Reap();
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  // The grandchild was in its group: gone as well (or a zombie of init's).
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        if (kill(sleeper, 0) != 0) return true;
        char state = 0;
        std::string path = "/proc/" + std::to_string(sleeper) + "/stat";
        FILE* f = std::fopen(path.c_str(), "r");
        if (f == nullptr) return true;
        const bool zombie =
            std::fscanf(f, "%*d (%*[^)]) %c", &state) == 1 && state == 'Z';
        std::fclose(f);
        return zombie;
      },
      std::chrono::seconds(10)));
}

TEST(TrainerProcessTest, ATrainerWhoseWorkerIsGoneDiesAtItsNextLine) {
  // The worker ignores SIGPIPE, and an ignored signal survives exec: the
  // child must get it back, or it writes on into a closed pipe.
  struct sigaction ignore {
  }, saved{};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, &saved);
  auto p = TrainerProcess::Spawn("/usr/bin/yes", {}, {});
  sigaction(SIGPIPE, &saved, nullptr);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_FALSE(ReadUntil((*p)->stdout_fd(), "y\n").empty());
  // The reader goes, as when a worker dies: the pipe's only read end is
  // replaced by /dev/null (the fd stays the object's to close).
  const int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(devnull, 0);
  ASSERT_GE(dup2(devnull, (*p)->stdout_fd()), 0);
  close(devnull);
  const int status = (*p)->Reap();
  ASSERT_TRUE(WIFSIGNALED(status)) << "exited " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGPIPE);
}

TEST(TrainerProcessTest, AMissingBinaryIsUnavailableWithTheReason) {
  auto p = TrainerProcess::Spawn("/nonexistent/megabatch-trainer", {}, {});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(p.status().message(),
              ::testing::HasSubstr("/nonexistent/megabatch-trainer"));
}

}  // namespace
}  // namespace megabatch::worker
