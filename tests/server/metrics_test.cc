// The coordinator's /metrics content: state gauges from the database, live
// series only while a trial runs, GPU series only for alive workers.
#include "server/metrics/metrics.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "tests/testing/http.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = store::SweepStore::Open(path_);
    ASSERT_OK(store);
    store_ = std::move(*store);
    auto spec = spec::ParseSweepSpec(R"yaml(
name: metrics-test
optimizers: [{name: lamb}]
batch_sizes: [128, 256]
base: {lr: 0.01}
)yaml");
    ASSERT_OK(spec);
    ASSERT_OK(store_->CreateSweep(*spec, spec::ExpandSweep(*spec), "", 10));
    worker_ = *store_->RegisterWorker("w1", 2, 10);
  }

  ::megabatch::testing::TempDir dir_;
  std::string path_ = dir_.File("metrics.db");
  std::unique_ptr<store::SweepStore> store_;
  store::ReadOnlyDb results_{path_};
  CoordinatorMetrics metrics_{&results_};
  int64_t worker_ = 0;
};

TEST_F(MetricsTest, StateGaugesComeFromTheDatabase) {
  std::string text = metrics_.Scrape();
  EXPECT_THAT(text, HasSubstr("megabatch_trials{state=\"queued\"} 2"));
  EXPECT_THAT(text, HasSubstr("megabatch_trials{state=\"diverged\"} 0"));
  EXPECT_THAT(text, HasSubstr("megabatch_queue_depth 2"));
  EXPECT_THAT(text, HasSubstr("megabatch_sweeps{state=\"queued\"} 1"));
  EXPECT_THAT(text, HasSubstr("megabatch_workers{state=\"alive\"} 1"));
  EXPECT_THAT(text, HasSubstr("megabatch_slots{state=\"free\"} 2"));
  EXPECT_THAT(text, HasSubstr("megabatch_worker_heartbeat_age_seconds{worker="
                              "\"w1\",worker_id=\"1\"}"));
  EXPECT_THAT(text, HasSubstr("megabatch_scrape_database_ok 1"));
}

TEST_F(MetricsTest, TrialSeriesExistWhileItRunsAndVanishWhenItEnds) {
  auto lease = store_->LeaseNext(worker_, 11);
  ASSERT_TRUE(lease.ok() && lease->has_value());
  const int64_t trial = (*lease)->trial_id;
  metrics_.RecordTrialPoints(trial, {{"train_loss", 1, 2.5},
                                     {"train_loss", 2, 1.5},
                                     {"samples_per_second", 2, 1000},
                                     {"weight_norm/0.weight", 2, 3.0}});
  const std::string id = "sweep=\"1\",trial=\"" + std::to_string(trial) + "\"";
  std::string text = metrics_.Scrape();
  EXPECT_THAT(text, HasSubstr("megabatch_trial_train_loss{" + id + "} 1.5"));
  EXPECT_THAT(text,
              HasSubstr("megabatch_trial_samples_per_second{" + id + "} 1000"));
  EXPECT_THAT(
      text, HasSubstr("megabatch_trial_info{" + id +
                      ",optimizer=\"lamb\",batch_size=\"128\",lr=\"0.01\"} 1"));
  EXPECT_THAT(text, Not(HasSubstr("weight_norm")));  // per-tensor: SQLite only
  EXPECT_THAT(text, HasSubstr("megabatch_slots{state=\"busy\"} 1"));
  EXPECT_THAT(text, HasSubstr("megabatch_metric_points_ingested_total 4"));

  ASSERT_TRUE(store_
                  ->FinishTrial(trial, (*lease)->lease_id, worker_,
                                store::TrialState::kCompleted, "", "", 12)
                  .ok());
  text = metrics_.Scrape();
  EXPECT_THAT(text, Not(HasSubstr("trial=\"" + std::to_string(trial) + "\"")));
  EXPECT_THAT(text, HasSubstr("megabatch_trials{state=\"completed\"} 1"));
}

TEST_F(MetricsTest, GpuSeriesOnlyForAliveWorkers) {
  metrics_.RecordWorkerGpus(worker_, {{3, 0.75, 1e9, 8e9}});
  std::string text = metrics_.Scrape();
  EXPECT_THAT(text,
              HasSubstr("megabatch_worker_gpu_utilization_ratio{worker=\"w1\","
                        "worker_id=\"1\",gpu=\"3\"} 0.75"));
  EXPECT_THAT(text,
              HasSubstr("megabatch_worker_gpu_memory_total_bytes{worker=\"w1\","
                        "worker_id=\"1\",gpu=\"3\"} 8000000000"));
  ASSERT_TRUE(store_->ExpireWorkers(/*deadline=*/100, /*now=*/100).ok());
  EXPECT_THAT(metrics_.Scrape(), Not(HasSubstr("gpu=\"3\"")));
}

TEST_F(MetricsTest, EventCountersAndHistograms) {
  metrics_.ObserveRpc("SubmitSweep", StatusCode::kInvalidArgument, 0.002);
  metrics_.ObserveDispatch(0.003);
  metrics_.ObserveStoreWrite("append_metrics", 0.0001);
  std::string text = metrics_.Scrape();
  EXPECT_THAT(text, HasSubstr("megabatch_rpcs_total{code=\"INVALID_ARGUMENT\","
                              "method=\"SubmitSweep\"} 1"));
  EXPECT_THAT(text,
              HasSubstr("megabatch_trial_dispatch_latency_seconds_count 1"));
  EXPECT_THAT(text, HasSubstr("megabatch_store_write_duration_seconds_count{op="
                              "\"append_metrics\"} 1"));
}

TEST_F(MetricsTest, ServeRefusesAnAddressInUse) {
  ASSERT_TRUE(metrics_.Serve("127.0.0.1:0").ok());
  ASSERT_GT(metrics_.port(), 0);
  CoordinatorMetrics other(&results_);
  Status s = other.Serve("127.0.0.1:" + std::to_string(metrics_.port()));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("metrics: cannot listen on 127.0.0.1:"));
}

// Two idle connections took both of /metrics' threads: every scrape after
// them hung.
TEST_F(MetricsTest, IdleConnectionsCannotStarveTheScrapes) {
  ASSERT_TRUE(metrics_.Serve("127.0.0.1:0").ok());
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(metrics_.port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // More idle connections than threads: they hold every thread until the
  // request timeout closes them.
  std::vector<int> idle;
  for (int i = 0; i < kMetricsThreads + 4; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    idle.push_back(fd);
  }
  // HttpGet waits up to 10 s: the first idlers are closed after 5.
  testing::HttpResponse r = testing::HttpGet(metrics_.port(), "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr("megabatch_"));
  for (int fd : idle) close(fd);
}

}  // namespace
}  // namespace megabatch::metrics
