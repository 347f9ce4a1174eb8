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

// After a restore from a backup the coordinator holds fewer steps than the
// newest checkpoints: a retry resumes from none past its last stored step.
TEST_F(CheckpointCommitterTest, NoResumePointIsPastTheCoordinatorsLastStep) {
  const fs::path lease = Lease(1);
  CheckpointCommitter committer(lease, std::chrono::hours(1));
  for (int64_t step : {10, 20, 30}) {
    committer.Announce(step, Write(lease, step));
    ASSERT_TRUE(committer.CommitIfStored(true));
  }
  // A file written but never committed is not a resume point either.
  Write(lease, 40);
  EXPECT_EQ(CheckpointCommitter::Latest(dir_.path(), 2),
            (lease / "step-30.pt").string());
  EXPECT_EQ(CheckpointCommitter::Latest(dir_.path(), 2, 30),
            (lease / "step-30.pt").string());
  EXPECT_EQ(CheckpointCommitter::Latest(dir_.path(), 2, 29),
            (lease / "step-20.pt").string());
  EXPECT_EQ(CheckpointCommitter::Latest(dir_.path(), 2, 9), "");
  EXPECT_EQ(CheckpointCommitter::Latest(dir_.path(), 2, -1), "");
}

// Older checkpoints stay for the history the coordinator asks for, and the
// newest one older than it too; without a history only the newest stays.
TEST_F(CheckpointCommitterTest, OlderCheckpointsStayForTheHistory) {
  const fs::path kept = Lease(1), plain = Lease(2);
  CheckpointCommitter with_history(kept, std::chrono::seconds(60));
  CheckpointCommitter without(plain);
  const auto now = fs::file_time_type::clock::now();
  for (int64_t step : {10, 20, 30, 40}) {
    with_history.Announce(step, Write(kept, step));
    without.Announce(step, Write(plain, step));
    // Steps 10 and 20 were written two minutes ago, 30 and 40 just now.
    if (step <= 20) {
      fs::last_write_time(kept / ("step-" + std::to_string(step) + ".pt"),
                          now - std::chrono::minutes(2));
    }
    ASSERT_TRUE(with_history.CommitIfStored(true));
    ASSERT_TRUE(without.CommitIfStored(true));
  }
  EXPECT_FALSE(fs::exists(kept / "step-10.pt"));
  EXPECT_TRUE(fs::exists(kept / "step-20.pt"));  // the newest before the window
  EXPECT_TRUE(fs::exists(kept / "step-30.pt"));
  EXPECT_TRUE(fs::exists(kept / "step-40.pt"));
  for (int64_t step : {10, 20, 30}) {
    EXPECT_FALSE(fs::exists(plain / ("step-" + std::to_string(step) + ".pt")));
  }
  EXPECT_TRUE(fs::exists(plain / "step-40.pt"));
}

}  // namespace
}  // namespace megabatch::worker
