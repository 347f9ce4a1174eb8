// Online backups and restores of the results database (store/backup.h).
#include "server/store/backup.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "server/store/db.h"
#include "server/store/sweep_store.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::store {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr const char* kSpec = R"yaml(
name: backup-test
optimizers: [{name: sgd}, {name: adamw}]
base: {lr: 0.1}
batch_sizes: [128]
)yaml";
constexpr int kBatch = 50;  // points in each AppendMetrics

class BackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(store_, SweepStore::Open(dir_.File("live.db")));
    auto spec = spec::ParseSweepSpec(kSpec);
    ASSERT_OK(spec.status());
    ASSERT_OK_AND_ASSIGN(
        auto created,
        store_->CreateSweep(*spec, spec::ExpandSweep(*spec), "", 1000.0));
    sweep_ = created.id;
    ASSERT_OK_AND_ASSIGN(worker_, store_->RegisterWorker("w", 2, 1000.0));
    ASSERT_OK_AND_ASSIGN(auto lease, store_->LeaseNext(worker_, 1001.0));
    ASSERT_TRUE(lease.has_value());
    lease_ = *lease;
  }

  // Stores train_loss (and lr) for steps [from, from + kBatch / 2).
  Status Append(int64_t from) {
    std::vector<MetricPoint> points;
    for (int64_t s = from; s < from + kBatch / 2; ++s) {
      points.push_back({"train_loss", s, 1.0 / static_cast<double>(s + 1)});
      points.push_back({"lr", s, 0.1});
    }
    return store_->AppendMetrics(lease_.trial_id, lease_.lease_id, worker_,
                                 points, 1002.0);
  }

  // One integer from `db_path`.
  int64_t Count(const std::string& db_path, const std::string& sql) {
    auto db = Db::OpenReadOnly(db_path);
    EXPECT_OK(db.status());
    auto q = (*db)->Prepare(sql);
    EXPECT_OK(q.status());
    auto row = q->Step();
    EXPECT_TRUE(row.ok() && *row) << sql;
    return q->Int(0);
  }

  testing::TempDir dir_;
  std::unique_ptr<SweepStore> store_;
  int64_t sweep_ = 0, worker_ = 0;
  Lease lease_;
};

// Backups taken while another connection writes are each one consistent
// snapshot: whole batches only, integrity ok, one self-contained file.
TEST_F(BackupTest, BackupsTakenWhileWritingAreConsistentSnapshots) {
  std::atomic<bool> done{false};
  std::atomic<int64_t> batches{0};
  std::thread writer([&] {
    for (int64_t from = 0; !done; from += kBatch / 2) {
      ASSERT_OK(Append(from));
      ++batches;
    }
  });
  std::vector<int64_t> seen;
  for (int i = 0; i < 5; ++i) {
    // Wait for some writes between backups (bounded).
    const int64_t before = batches;
    for (int spin = 0; spin < 100000 && batches < before + 3; ++spin)
      std::this_thread::yield();
    const std::string to = dir_.File("backup-" + std::to_string(i) + ".db");
    ASSERT_OK(BackupDatabase(dir_.File("live.db"), to));
    EXPECT_FALSE(fs::exists(to + "-wal"));
    EXPECT_FALSE(fs::exists(to + ".tmp"));
    EXPECT_EQ(Count(to,
                    "SELECT count(*) FROM pragma_integrity_check WHERE "
                    "integrity_check <> 'ok'"),
              0);
    const int64_t points = Count(to, "SELECT count(*) FROM metrics");
    EXPECT_EQ(points % kBatch, 0) << "a batch split by the backup";
    seen.push_back(points);
  }
  done = true;
  writer.join();
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_GT(seen.back(), seen.front()) << "the writer was not writing";
  // The live database went on: it has everything, the last backup less.
  EXPECT_EQ(Count(dir_.File("live.db"), "SELECT count(*) FROM metrics"),
            batches * kBatch);
}

TEST_F(BackupTest, ABackupNeverOverwritesAFile) {
  const std::string to = dir_.File("taken.db");
  std::ofstream(to) << "precious";
  Status s = BackupDatabase(dir_.File("live.db"), to);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
  EXPECT_THAT(s.message(), HasSubstr(to));
  std::string text;
  std::getline(std::ifstream(to), text);
  EXPECT_EQ(text, "precious");
  EXPECT_FALSE(BackupDatabase(dir_.File("missing.db"), dir_.File("x.db")).ok());
}

TEST_F(BackupTest, ADirectoryOfBackupsKeepsTheNewest) {
  const std::string dir = dir_.File("backups");
  // Earlier backups, as the names a periodic backup gives them.
  fs::create_directories(dir);
  for (const char* old :
       {"megabatch-20200101T000000Z.db", "megabatch-20200102T000000Z.db"}) {
    ASSERT_OK(BackupDatabase(dir_.File("live.db"), dir + "/" + old));
  }
  ASSERT_OK_AND_ASSIGN(std::string newest,
                       BackupIntoDirectory(dir_.File("live.db"), dir, 2));
  EXPECT_TRUE(fs::exists(newest));
  EXPECT_FALSE(fs::exists(dir + "/megabatch-20200101T000000Z.db"));
  EXPECT_TRUE(fs::exists(dir + "/megabatch-20200102T000000Z.db"));
}

// A restored database serves safely: the running trial is queued again, its
// retry may resume from no step past what the backup holds, nothing the
// lost coordinator gave out after the backup matches again (leases, worker,
// sweep and trial ids), and the lost coordinator's writes are fenced.
TEST_F(BackupTest, ARestoredDatabaseRequeuesAndFencesWhatTheLostOneGaveOut) {
  ASSERT_OK(Append(0));  // steps 0..24 stored before the backup
  const std::string backup = dir_.File("backup.db");
  ASSERT_OK(BackupDatabase(dir_.File("live.db"), backup));
  // After the backup the lost coordinator stored more and gave out more.
  ASSERT_OK(Append(25));
  ASSERT_OK_AND_ASSIGN(int64_t late_worker,
                       store_->RegisterWorker("late", 1, 1003.0));
  store_.reset();

  const std::string restored = dir_.File("restored.db");
  // Never over an existing database, nor beside a stale write-ahead log.
  EXPECT_EQ(RestoreDatabase(backup, dir_.File("live.db"), 100, 1004.0)
                .status()
                .code(),
            StatusCode::kAlreadyExists);
  std::ofstream(restored + "-wal") << "stale";
  EXPECT_EQ(RestoreDatabase(backup, restored, 100, 1004.0).status().code(),
            StatusCode::kAlreadyExists);
  fs::remove(restored + "-wal");
  EXPECT_EQ(RestoreDatabase(dir_.File("nope.db"), restored, 100, 1004.0)
                .status()
                .code(),
            StatusCode::kNotFound);

  ASSERT_OK_AND_ASSIGN(int requeued,
                       RestoreDatabase(backup, restored, 100, 1004.0));
  EXPECT_EQ(requeued, 1);
  ASSERT_OK_AND_ASSIGN(auto store, SweepStore::Open(restored));
  ASSERT_OK_AND_ASSIGN(auto trials, store->ListTrials(sweep_));
  for (const TrialRow& t : trials) EXPECT_EQ(t.state, TrialState::kQueued);
  // The old lease is void: the lost coordinator's worker is fenced.
  EXPECT_EQ(store
                ->AppendMetrics(lease_.trial_id, lease_.lease_id, worker_,
                                {{"train_loss", 99, 0.1}}, 1004.0)
                .code(),
            StatusCode::kAborted);
  // New ids start past the gap: the late worker's id is not given out again.
  ASSERT_OK_AND_ASSIGN(int64_t worker, store->RegisterWorker("new", 1, 1005.0));
  EXPECT_GT(worker, late_worker + 100 - 1);
  auto spec = spec::ParseSweepSpec(kSpec);
  ASSERT_OK_AND_ASSIGN(
      auto created,
      store->CreateSweep(*spec, spec::ExpandSweep(*spec), "", 1006.0));
  const int64_t sweep = created.id;
  EXPECT_GE(sweep, sweep_ + 1 + 100);
  ASSERT_OK_AND_ASSIGN(auto new_trials, store->ListTrials(sweep));
  EXPECT_GE(new_trials.front().id, 2 + 1 + 100);
  // The retry: a new lease, bound to the steps the backup has.
  ASSERT_OK_AND_ASSIGN(auto lease, store->LeaseNext(worker, 1007.0));
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->trial_id, lease_.trial_id);
  EXPECT_NE(lease->lease_id, lease_.lease_id);
  EXPECT_NE(lease->lease_id, lease_.lease_id + 100);
  EXPECT_EQ(lease->resume_max_step, 24);
  EXPECT_EQ(Count(restored,
                  "SELECT count(*) FROM events WHERE kind = "
                  "'database_restored'"),
            1);
}

}  // namespace
}  // namespace megabatch::store
