// Observability end to end: a real coordinator and workers running a sweep,
// the real Prometheus (Debian's `prometheus`) scraping it with the repo's
// scrape config, and every query of every shipped Grafana dashboard panel
// answered with data; `promtool` checks the live /metrics and the config; a
// trial's series leave /metrics as soon as it ends.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "megabatch/v1/megabatch.grpc.pb.h"
#include "tests/testing/http.h"
#include "tests/testing/process.h"
#include "tests/testing/temp_dir.h"

namespace megabatch {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::Process;
using testing::RunCommand;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class ObservabilityE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    address_ = "127.0.0.1:" + std::to_string(testing::FreePort());
    metrics_port_ = testing::FreePort();
    coordinator_ = std::make_unique<Process>(
        std::vector<std::string>{MEGABATCH_COORDINATOR_BIN, "--listen",
                                 address_, "--db", dir_.File("m.db"),
                                 "--metrics-listen",
                                 "127.0.0.1:" + std::to_string(metrics_port_)},
        dir_.File("coordinator.log"));
    workers_ = testing::StartWorkers(MEGABATCH_WORKER_BIN, address_,
                                     dir_.path().string(), 2);
    // The shipped scrape config, pointed at this coordinator.
    std::string config = ReadFile(std::string(MEGABATCH_DASHBOARD_DIR) +
                                  "/prometheus/prometheus.yml");
    ASSERT_THAT(config, HasSubstr("127.0.0.1:9464"));
    config = std::regex_replace(config, std::regex("127\\.0\\.0\\.1:9464"),
                                "127.0.0.1:" + std::to_string(metrics_port_));
    std::ofstream(dir_.File("prometheus.yml")) << config;
    prometheus_port_ = testing::FreePort();
    prometheus_ = std::make_unique<Process>(
        std::vector<std::string>{"/usr/bin/prometheus",
                                 "--config.file=" + dir_.File("prometheus.yml"),
                                 "--storage.tsdb.path=" + dir_.File("tsdb"),
                                 "--web.listen-address=127.0.0.1:" +
                                     std::to_string(prometheus_port_),
                                 "--log.level=warn"},
        dir_.File("prometheus.log"));
    ASSERT_TRUE(testing::WaitUntil(
        [&] {
          return testing::HttpGet(prometheus_port_, "/-/ready").status == 200;
        },
        std::chrono::seconds(60)))
        << prometheus_->Log();
    ASSERT_TRUE(testing::WaitUntil([&] { return Cli({"list"}).exit_code == 0; },
                                   std::chrono::seconds(30)))
        << coordinator_->Log();
    StartSimulatedGpuWorker();
  }

  void TearDown() override {
    stop_gpu_worker_ = true;
    if (gpu_worker_.joinable()) gpu_worker_.join();
  }

  // A worker with one GPU, speaking the public WorkerService as a worker on a
  // GPU machine does (this machine has no GPU and no NVML).
  void StartSimulatedGpuWorker() {
    auto channel =
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
    auto stub = v1::WorkerService::NewStub(channel);
    grpc::ClientContext ctx;
    v1::RegisterWorkerRequest req;
    req.set_name("gpu-sim");
    req.set_slots(1);
    v1::RegisterWorkerResponse resp;
    ASSERT_TRUE(stub->RegisterWorker(&ctx, req, &resp).ok());
    gpu_worker_ =
        std::thread([this, stub = std::move(stub), id = resp.worker_id()] {
          while (!stop_gpu_worker_) {
            grpc::ClientContext hb_ctx;
            v1::HeartbeatRequest hb;
            hb.set_worker_id(id);
            v1::GpuStats* gpu = hb.add_gpus();
            gpu->set_index(0);
            gpu->set_utilization_ratio(0.5);
            gpu->set_memory_used_bytes(int64_t{1} << 30);
            gpu->set_memory_total_bytes(int64_t{80} << 30);
            v1::HeartbeatResponse hb_resp;
            stub->Heartbeat(&hb_ctx, hb, &hb_resp);
            for (int i = 0; i < 5 && !stop_gpu_worker_; ++i) {
              std::this_thread::sleep_for(std::chrono::milliseconds(100));
            }
          }
        });
  }

  testing::CommandResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {MEGABATCH_CLI_BIN, "--server", address_});
    return RunCommand(args);
  }

  // The number of series Prometheus returns for `expr` now (-1: error).
  int PromQuery(const std::string& expr, std::string* error) {
    auto r = testing::HttpGet(
        prometheus_port_, "/api/v1/query?query=" + testing::UrlEncode(expr));
    if (r.status != 200) {
      *error = "HTTP " + std::to_string(r.status) + ": " + r.body;
      return -1;
    }
    auto body = nlohmann::json::parse(r.body);
    return static_cast<int>(body["data"]["result"].size());
  }

  std::string Scrape() {
    return testing::HttpGet(metrics_port_, "/metrics").body;
  }

  testing::TempDir dir_;
  std::string address_;
  int metrics_port_ = 0, prometheus_port_ = 0;
  std::unique_ptr<Process> coordinator_, prometheus_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::thread gpu_worker_;
  std::atomic<bool> stop_gpu_worker_{false};
};

TEST_F(ObservabilityE2ETest, EveryDashboardQueryHasDataWhileASweepRuns) {
  auto check_config = RunCommand(
      {"/usr/bin/promtool", "check", "config",
       std::string(MEGABATCH_DASHBOARD_DIR) + "/prometheus/prometheus.yml"});
  EXPECT_EQ(check_config.exit_code, 0) << check_config.out << check_config.err;

  std::ofstream(dir_.File("sweep.yaml")) << R"yaml(
name: observed
model: {type: mlp, hidden: [64]}
optimizers: [{name: lamb}, {name: adamw}]
batch_sizes: [1024]
micro_batch_size: 256
base: {lr: 0.002}
budget: {steps: 100000}
eval_every_steps: 20
)yaml";
  auto submit = Cli({"submit", dir_.File("sweep.yaml")});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  const std::string sweep = "1";

  // Both trials running and reporting, as /metrics shows them.
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        std::string text = Scrape();
        return text.find(
                   "megabatch_trial_gradient_noise_scale{sweep=\"1\",trial="
                   "\"2\"}") != std::string::npos &&
               text.find(
                   "megabatch_trial_val_accuracy{sweep=\"1\",trial=\"1\"}") !=
                   std::string::npos;
      },
      std::chrono::seconds(120)))
      << Scrape() << workers_[0]->Log();

  // promtool's lint on a live scrape: no problems at all.
  std::ofstream(dir_.File("scrape.txt")) << Scrape();
  auto lint = RunCommand(
      {"/bin/sh", "-c",
       "/usr/bin/promtool check metrics < " + dir_.File("scrape.txt")});
  EXPECT_EQ(lint.exit_code, 0) << lint.out << lint.err;
  EXPECT_EQ(lint.out + lint.err, "");

  // Every query of every panel, variables substituted, returns series.
  int queries = 0;
  for (const char* name : {"cluster.json", "sweep.json"}) {
    auto dashboard = nlohmann::json::parse(ReadFile(
        std::string(MEGABATCH_DASHBOARD_DIR) + "/grafana/dashboards/" + name));
    for (const auto& panel : dashboard["panels"]) {
      EXPECT_EQ(panel["datasource"]["uid"], "${datasource}") << panel["title"];
      for (const auto& target : panel["targets"]) {
        std::string expr = target["expr"];
        for (const auto& [from, to] :
             std::vector<std::pair<std::string, std::string>>{
                 {"$__rate_interval", "1m"},
                 {"$__range", "5m"},
                 {"$sweep", sweep},
                 {"$trial", ".*"}}) {
          for (size_t at; (at = expr.find(from)) != std::string::npos;) {
            expr.replace(at, from.size(), to);
          }
        }
        ++queries;
        std::string error;
        int series = 0;
        bool answered = testing::WaitUntil(
            [&] { return (series = PromQuery(expr, &error)) > 0; },
            std::chrono::seconds(60));
        EXPECT_TRUE(answered)
            << name << " panel '" << panel["title"].get<std::string>()
            << "': no data for " << expr << " " << error;
      }
    }
  }
  EXPECT_GE(queries, 20);

  // Ending the trials removes their series at once: the first scrape after
  // they are cancelled has none.
  ASSERT_EQ(Cli({"cancel", sweep}).exit_code, 0);
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        auto r =
            Cli({"-o", "json", "query",
                 "SELECT count(*) AS n FROM trials WHERE state = 'running'"});
        return r.exit_code == 0 && nlohmann::json::parse(r.out)[0]["n"] == 0;
      },
      std::chrono::seconds(30)));
  std::string after = Scrape();
  EXPECT_THAT(after, Not(HasSubstr("megabatch_trial_info{")));
  EXPECT_THAT(after, Not(HasSubstr("trial=\"1\"")));
  EXPECT_THAT(after, Not(HasSubstr("trial=\"2\"")));
  EXPECT_THAT(after, HasSubstr("megabatch_trials{state=\"cancelled\"} 2"));
}

}  // namespace
}  // namespace megabatch
