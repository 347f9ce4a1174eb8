// The worker's files on a host shared with other local users.
#include "worker/daemon/private_files.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::worker {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
namespace fs = std::filesystem;

// A predictable work dir ($TMPDIR/megabatch-worker-<pid>) let a local user
// plant a config.json symlink: a root-owned file was overwritten with the
// trial's JSON.
TEST(PrivateFilesTest, TempDirsArePrivateAndUnguessable) {
  testing::TempDir dir;
  auto a = MakePrivateTempDir(dir.path().string(), "megabatch-worker-");
  auto b = MakePrivateTempDir(dir.path().string(), "megabatch-worker-");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_THAT(*a, StartsWith(dir.File("megabatch-worker-")));
  EXPECT_NE(*a, dir.File("megabatch-worker-" + std::to_string(getpid())));
  EXPECT_EQ(fs::status(*a).permissions() & fs::perms::all,
            fs::perms::owner_all);
  EXPECT_TRUE(EnsurePrivateDir(*a).ok());
  auto missing = MakePrivateTempDir(dir.File("no/such"), "x-");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr(dir.File("no/such")));
}

TEST(PrivateFilesTest, AtomicWritesReplaceAPlantedSymlinkAndNeverFollowIt) {
  testing::TempDir dir;
  const std::string victim = dir.File("victim");
  std::ofstream(victim) << "precious";
  const std::string config = dir.File("config.json");
  fs::create_symlink(victim, config);
  ASSERT_TRUE(WriteFileAtomically(config, "{\"a\": 1}").ok());
  std::ifstream in(victim);
  std::string content((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(content, "precious");
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(config)));
  auto back = ReadOwnFile(config);
  ASSERT_OK(back);
  EXPECT_EQ(*back, "{\"a\": 1}");
  EXPECT_EQ(fs::status(config).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
}

TEST(PrivateFilesTest, ReadOwnFileRefusesWhatIsNotThisUsersRegularFile) {
  testing::TempDir dir;
  EXPECT_EQ(ReadOwnFile(dir.File("absent")).status().code(),
            StatusCode::kNotFound);
  ASSERT_EQ(::mkfifo(dir.File("fifo").c_str(), 0600), 0);
  EXPECT_EQ(ReadOwnFile(dir.File("fifo")).status().code(),
            StatusCode::kPermissionDenied);
  std::ofstream(dir.File("real")) << "x";
  fs::create_symlink(dir.File("real"), dir.File("link"));
  EXPECT_EQ(ReadOwnFile(dir.File("link")).status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(ReadOwnFile("/dev/zero").status().code(),
            StatusCode::kPermissionDenied);
}

TEST(PrivateFilesTest, EnsurePrivateDirMakesParentsAndNamesWhatIsWrong) {
  testing::TempDir dir;
  ASSERT_TRUE(EnsurePrivateDir(dir.File("a/b/c")).ok());
  EXPECT_EQ(fs::status(dir.File("a/b/c")).permissions() & fs::perms::all,
            fs::perms::owner_all);
  ASSERT_EQ(::chmod(dir.File("a/b/c").c_str(), 0770), 0);
  Status s = EnsurePrivateDir(dir.File("a/b/c"));
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("mode 0770"));
  std::ofstream(dir.File("file")) << "x";
  EXPECT_THAT(EnsurePrivateDir(dir.File("file")).message(),
              HasSubstr("not a directory"));
}

TEST(PrivateFilesTest, TheDefaultRuntimeDirFollowsTheEnvironment) {
  ::setenv("RUNTIME_DIRECTORY", "/run/megabatch:/run/other", 1);
  EXPECT_EQ(DefaultRuntimeDir(), "/run/megabatch");
  ::unsetenv("RUNTIME_DIRECTORY");
  ::setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
  EXPECT_EQ(DefaultRuntimeDir(), "/run/user/1000/megabatch");
  ::unsetenv("XDG_RUNTIME_DIR");
  EXPECT_EQ(DefaultRuntimeDir(),
            ::geteuid() == 0 ? "/run/megabatch"
                             : (fs::temp_directory_path() /
                                ("megabatch-" + std::to_string(::geteuid())))
                                   .string());
}

}  // namespace
}  // namespace megabatch::worker
