// The per-host core claims the workers of one machine share.
#include "worker/daemon/host_claims.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::worker {
namespace {

using ::testing::HasSubstr;

TEST(PlanThreadsTest, DefaultThreadsShareOutTheCoresOthersLeft) {
  EXPECT_EQ(PlanThreads(8, 2, 0, 0).threads_per_slot, 4);
  EXPECT_FALSE(PlanThreads(8, 2, 0, 0).oversubscribed);
  ThreadPlan after_others = PlanThreads(8, 2, 0, 4);
  EXPECT_EQ(after_others.threads_per_slot, 2);
  EXPECT_FALSE(after_others.oversubscribed);
  EXPECT_TRUE(after_others.warning.empty());
  // The quick start's shape: a slot per core, one thread each.
  EXPECT_FALSE(PlanThreads(2, 2, 1, 0).oversubscribed);
  EXPECT_FALSE(PlanThreads(16, 16, 0, 0).oversubscribed);
  EXPECT_EQ(PlanThreads(16, 16, 0, 0).threads_per_slot, 1);
}

TEST(PlanThreadsTest, MoreThreadsThanFreeCoresIsOversubscribedAndSaysWhy) {
  // Nothing left: still one thread per slot, and a warning.
  ThreadPlan none_left = PlanThreads(2, 1, 0, 2);
  EXPECT_EQ(none_left.threads_per_slot, 1);
  EXPECT_TRUE(none_left.oversubscribed);
  EXPECT_THAT(none_left.warning,
              HasSubstr("0 of this host's 2 cores are free"));
  EXPECT_THAT(none_left.warning, HasSubstr("other megabatch workers claim 2"));
  // Asked for explicitly: given, and warned about.
  ThreadPlan asked = PlanThreads(2, 2, 2, 0);
  EXPECT_EQ(asked.threads_per_slot, 2);
  EXPECT_TRUE(asked.oversubscribed);
  EXPECT_THAT(asked.warning, HasSubstr("2 slots x 2 threads = 4 threads"));
}

TEST(HostClaimsTest, WorkersSeeEachOthersClaimsAndForgetTheDead) {
  testing::TempDir dir;
  const std::string claims_dir = dir.File("claims");
  auto mine = HostClaims::Open(claims_dir);
  ASSERT_OK(mine);
  EXPECT_EQ(std::filesystem::status(claims_dir).permissions() &
                std::filesystem::perms::all,
            std::filesystem::perms::owner_all);
  ASSERT_TRUE((*mine)->Publish(4).ok());
  const std::string my_file =
      claims_dir + "/worker-" + std::to_string(getpid());
  EXPECT_TRUE(std::filesystem::exists(my_file));
  // Another live worker (our parent stands in) and one that is gone.
  std::ofstream(claims_dir + "/worker-" + std::to_string(getppid())) << "3 2\n";
  std::ofstream(claims_dir + "/worker-999999999") << "16 16\n";
  HostClaims::Totals t = (*mine)->Read();
  EXPECT_EQ(t.others_capacity, 3);
  EXPECT_EQ(t.active, 2);
  EXPECT_FALSE(std::filesystem::exists(claims_dir + "/worker-999999999"));
  (*mine)->AddActive(2);
  (*mine)->AddActive(2);
  EXPECT_EQ((*mine)->Read().active, 6);
  std::ifstream written(my_file);
  int capacity = 0, active = 0;
  written >> capacity >> active;
  EXPECT_EQ(capacity, 4);
  EXPECT_EQ(active, 4);
  (*mine)->AddActive(-4);
  EXPECT_EQ((*mine)->Read().active, 2);
  mine->reset();
  EXPECT_FALSE(std::filesystem::exists(my_file))
      << "the claim goes with its worker";
}

TEST(HostClaimsTest, AnUnusableDirectoryIsAClearError) {
  testing::TempDir dir;
  std::ofstream(dir.File("file")) << "x";
  auto claims = HostClaims::Open(dir.File("file") + "/claims");
  ASSERT_FALSE(claims.ok());
  EXPECT_THAT(claims.status().message(),
              HasSubstr(dir.File("file") + "/claims"));
}

// Any local user could plant symlinks in the shared /tmp/megabatch-cores: a
// root-run worker overwrote a root-owned 0600 file through one, and a forged
// claim marked every trial on the host as shared.
TEST(HostClaimsTest, ADirectoryOthersCanWriteOrRedirectIsRefused) {
  testing::TempDir dir;
  const std::string shared = dir.File("shared");
  ASSERT_EQ(::mkdir(shared.c_str(), 0777), 0);
  ASSERT_EQ(::chmod(shared.c_str(), 01777), 0);
  auto open = HostClaims::Open(shared);
  ASSERT_FALSE(open.ok());
  EXPECT_EQ(open.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(open.status().message(),
              HasSubstr("writable by group or others"));
  std::filesystem::create_directory_symlink(dir.path(), dir.File("link"));
  open = HostClaims::Open(dir.File("link"));
  ASSERT_FALSE(open.ok());
  EXPECT_THAT(open.status().message(), HasSubstr("a symlink"));
  if (::geteuid() == 0) {  // only root can give a directory away
    const std::string theirs = dir.File("theirs");
    ASSERT_EQ(::mkdir(theirs.c_str(), 0700), 0);
    ASSERT_EQ(::chown(theirs.c_str(), 65534, 65534), 0);
    open = HostClaims::Open(theirs);
    ASSERT_FALSE(open.ok());
    EXPECT_THAT(open.status().message(), HasSubstr("owned by uid 65534"));
  }
}

TEST(HostClaimsTest, PlantedSymlinksAreReplacedNotFollowed) {
  testing::TempDir dir;
  const std::string claims_dir = dir.File("claims");
  auto mine = HostClaims::Open(claims_dir);
  ASSERT_OK(mine);
  const std::string victim = dir.File("victim");
  std::ofstream(victim) << "precious\n";
  const std::string claim = claims_dir + "/worker-" + std::to_string(getpid());
  std::filesystem::create_symlink(victim, claim);
  std::filesystem::create_symlink(victim,
                                  claim + ".tmp-" + std::to_string(getpid()));
  ASSERT_TRUE((*mine)->Publish(4).ok());
  std::ifstream in(victim);
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "precious");
  EXPECT_TRUE(
      std::filesystem::is_regular_file(std::filesystem::symlink_status(claim)));
}

TEST(HostClaimsTest, ClaimsThatAreNotThisUsersRegularFilesAreIgnored) {
  testing::TempDir dir;
  const std::string claims_dir = dir.File("claims");
  auto mine = HostClaims::Open(claims_dir);
  ASSERT_OK(mine);
  // Our parent process is alive: its claim would count if it were one.
  const std::string parent =
      claims_dir + "/worker-" + std::to_string(getppid());
  ASSERT_EQ(::mkfifo(parent.c_str(), 0600), 0);  // reading it would block
  EXPECT_EQ((*mine)->Read().others_capacity, 0);
  ::unlink(parent.c_str());
  std::ofstream(dir.File("elsewhere")) << "64 64\n";
  std::filesystem::create_symlink(dir.File("elsewhere"), parent);
  EXPECT_EQ((*mine)->Read().others_capacity, 0);
  ::unlink(parent.c_str());
  if (::geteuid() == 0) {
    std::ofstream(parent) << "64 64\n";
    ASSERT_EQ(::chown(parent.c_str(), 65534, 65534), 0);
    EXPECT_EQ((*mine)->Read().others_capacity, 0);
    ASSERT_EQ(::chown(parent.c_str(), 0, 0), 0);
    EXPECT_EQ((*mine)->Read().others_capacity, 64);
  }
}

TEST(HostClaimsTest, UsableCoresIsThisProcesssAffinity) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  EXPECT_EQ(UsableCores(), CPU_COUNT(&set));
}

}  // namespace
}  // namespace megabatch::worker
