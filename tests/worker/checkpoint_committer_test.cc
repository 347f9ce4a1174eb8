#include "worker/daemon/checkpoint_committer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/testing/temp_dir.h"

namespace megabatch::worker {
namespace {

namespace fs = std::filesystem;

class CheckpointCommitterTest : public ::testing::Test {
 protected:
  fs::path Lease(int64_t n) {
    fs::path dir = fs::path(dir_.path()) / ("lease-" + std::to_string(n));
    fs::create_directories(dir);
    return dir;
  }
  std::string Write(const fs::path& lease, int64_t step) {
    fs::path file = lease / ("step-" + std::to_string(step) + ".pt");
    std::ofstream(file) << "weights at " << step;
    return file.string();
  }
  testing::TempDir dir_;
};

TEST_F(CheckpointCommitterTest,
       ACheckpointIsCommittedOnlyOnceItsPointsAreStored) {
  const fs::path lease = Lease(1);
  CheckpointCommitter committer(lease);
  committer.Announce(10, Write(lease, 10));
  // Points read before it are still unsent: nothing to resume from yet.
  EXPECT_FALSE(committer.CommitIfStored(false));
  EXPECT_EQ(CheckpointCommitter::Latest(dir_.path(), 2), "");
  // A newer one replaces the announcement; once stored, it is committed and
  // the older file goes.
  committer.Announce(20, Write(lease, 20));
  EXPECT_TRUE(committer.CommitIfStored(true));
  EXPECT_FALSE(committer.has_announced());
  EXPECT_EQ(CheckpointCommitter::Latest(dir_.path(), 2),
            (lease / "step-20.pt").string());
  EXPECT_FALSE(fs::exists(lease / "step-10.pt"));
  // Nothing new announced: nothing to commit.
  EXPECT_FALSE(committer.CommitIfStored(true));
}

TEST_F(CheckpointCommitterTest,
       TheNewestEarlierAttemptsCommittedCheckpointIsTheResumePoint) {
  CheckpointCommitter first(Lease(1)), third(Lease(3));
  first.Announce(5, Write(Lease(1), 5));
  ASSERT_TRUE(first.CommitIfStored(true));
  third.Announce(8, Write(Lease(3), 8));
  ASSERT_TRUE(third.CommitIfStored(true));
  // An attempt with nothing committed (lease 4 wrote but never committed).
  Write(Lease(4), 9);
  EXPECT_EQ(CheckpointCommitter::Latest(dir_.path(), 5),
            (Lease(3) / "step-8.pt").string());
  // Its own lease never counts; a committed file that is gone does not either.
  EXPECT_EQ(CheckpointCommitter::Latest(dir_.path(), 3),
            (Lease(1) / "step-5.pt").string());
  fs::remove(Lease(3) / "step-8.pt");
  EXPECT_EQ(CheckpointCommitter::Latest(dir_.path(), 5),
            (Lease(1) / "step-5.pt").string());
}

}  // namespace
}  // namespace megabatch::worker
