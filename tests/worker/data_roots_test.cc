// What a spec may make a worker read: regular files under its data roots.
#include "worker/daemon/data_roots.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "common/datasets.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::worker {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class DataRootsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_.File("root/corpus"));
    std::ofstream(dir_.File("root/corpus/a.txt")) << "text";
    std::ofstream(dir_.File("root/one.txt")) << "text";
    std::ofstream(dir_.File("outside.txt")) << "secret";
    roots_ = {dir_.File("root")};
  }

  Status Check(const std::string& path) { return CheckDataPath(path, roots_); }

  testing::TempDir dir_;
  std::vector<std::string> roots_;
};

TEST_F(DataRootsTest, RegularFilesAndDirectoriesUnderARootAreRead) {
  EXPECT_TRUE(Check(dir_.File("root/one.txt")).ok());
  EXPECT_TRUE(Check(dir_.File("root/corpus")).ok());
  EXPECT_TRUE(Check(dir_.File("root")).ok());
  // A symlink that stays inside a root is fine.
  fs::create_symlink(dir_.File("root/one.txt"), dir_.File("root/alias"));
  EXPECT_TRUE(Check(dir_.File("root/alias")).ok());
  // The shipped defaults hold the quick start's data.
  EXPECT_TRUE(
      CheckDataPath("/usr/share/datasets/fashion-mnist", DefaultDataRoots())
          .ok());
}

// dataset.path: /dev/zero read 1.5 GB in 3.7 s; a FIFO hung the trial.
TEST_F(DataRootsTest, DevicesFifosAndPathsOutsideTheRootsAreRefused) {
  Status zero = CheckDataPath("/dev/zero", {"/dev"});
  EXPECT_EQ(zero.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(zero.message(), HasSubstr("not a regular file"));
  ASSERT_EQ(::mkfifo(dir_.File("root/fifo").c_str(), 0600), 0);
  EXPECT_THAT(Check(dir_.File("root/fifo")).message(),
              HasSubstr("not a regular file"));
  // A directory holding one is refused too: the trainer would read it.
  EXPECT_THAT(Check(dir_.File("root")).message(),
              HasSubstr("not a regular file"));
  ::unlink(dir_.File("root/fifo").c_str());
  Status outside = Check(dir_.File("outside.txt"));
  EXPECT_THAT(outside.message(), HasSubstr("not under a data root"));
  EXPECT_THAT(outside.message(), HasSubstr(dir_.File("root")));
  EXPECT_THAT(Check(dir_.File("root/../outside.txt")).message(),
              HasSubstr("not under a data root"));
  fs::create_symlink(dir_.File("outside.txt"), dir_.File("root/corpus/leak"));
  EXPECT_THAT(Check(dir_.File("root/corpus/leak")).message(),
              HasSubstr("not under a data root"));
  EXPECT_THAT(Check(dir_.File("root/corpus")).message(),
              HasSubstr("not under a data root"));
  EXPECT_THAT(Check(dir_.File("root/absent")).message(),
              HasSubstr("on this worker"));
  // A root that is a prefix of another directory's name is not that one.
  fs::create_directories(dir_.File("root-other"));
  std::ofstream(dir_.File("root-other/x")) << "x";
  EXPECT_THAT(Check(dir_.File("root-other/x")).message(),
              HasSubstr("not under a data root"));
}

}  // namespace
}  // namespace megabatch::worker
