#include "worker/trainer/data/tokenize_client.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "worker/trainer/data/files.h"

extern char** environ;

namespace megabatch::trainer {
namespace {

namespace fs = std::filesystem;

std::string FindTool() {
  if (const char* env = std::getenv("MEGABATCH_TOKENIZE"); env && *env)
    return env;
  std::error_code ec;
  fs::path beside = fs::read_symlink("/proc/self/exe", ec).parent_path() /
                    "megabatch-tokenize";
  if (!ec && fs::exists(beside, ec)) return beside.string();
  return "megabatch-tokenize";  // PATH
}

// Runs `argv`, its stderr shared with ours, and returns its stdout and exit
// status.
Status Run(const std::vector<std::string>& argv, std::string* out,
           int* exit_status) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return InternalError(std::string("megabatch-tokenize: pipe: ") +
                         std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0].c_str(), &actions, nullptr, args.data(),
                        environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    return FailedPreconditionError(
        "model.type: tiny_bert needs " + argv[0] + ": " + std::strerror(rc) +
        " (build it beside megabatch-trainer, or set MEGABATCH_TOKENIZE)");
  }
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buffer, sizeof(buffer))) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    out->append(buffer, static_cast<size_t>(n));
  }
  ::close(pipe_fds[0]);
  while (::waitpid(pid, exit_status, 0) < 0 && errno == EINTR) {
  }
  return Status();
}

Result<std::vector<int32_t>> ReadIds(const std::string& path, int vocab_size) {
  auto bytes = ReadFileBytes(path, "token ids");
  if (!bytes.ok()) return bytes.status();
  const std::string& data = *bytes;
  if (data.size() % sizeof(int32_t) != 0) {
    return DataLossError("token ids " + path +
                         ": truncated (delete it to make it again)");
  }
  std::vector<int32_t> ids(data.size() / sizeof(int32_t));
  std::memcpy(ids.data(), data.data(), data.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size) {
      return DataLossError(
          "token ids " + path + ": id " + std::to_string(id) +
          " outside the vocabulary (delete it to make it again)");
    }
  }
  return ids;
}

}  // namespace

Result<TokenIds> LoadTokenIds(const TrialConfig& config) {
  std::ostringstream fraction;
  fraction.precision(17);
  fraction << config.validation_fraction;
  std::string out;
  int status = 0;
  MEGABATCH_RETURN_IF_ERROR(
      Run({FindTool(), "--corpus", config.dataset_path, "--vocab-size",
           std::to_string(config.vocab_size), "--validation-fraction",
           fraction.str(), "--cache-dir", CacheDirOf(config), "--threads",
           std::to_string(config.threads)},
          &out, &status));
  nlohmann::json reply = nlohmann::json::parse(out, nullptr, false);
  if (reply.is_discarded() || !reply.is_object()) {
    return InternalError("megabatch-tokenize exited with status " +
                         std::to_string(status) + " and no answer");
  }
  if (reply.contains("code")) {
    return Status(
        static_cast<StatusCode>(reply.value("code", 2)),
        reply.value("message", std::string("megabatch-tokenize failed")));
  }
  TokenIds ids;
  ids.vocab_size = reply.value("vocab_size", 0);
  ids.model_path = reply.value("model", std::string());
  auto train = ReadIds(reply.value("train", std::string()), ids.vocab_size);
  if (!train.ok()) return train.status();
  auto validation =
      ReadIds(reply.value("validation", std::string()), ids.vocab_size);
  if (!validation.ok()) return validation.status();
  ids.train = std::move(*train);
  ids.validation = std::move(*validation);
  return ids;
}

}  // namespace megabatch::trainer
