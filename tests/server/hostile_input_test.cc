// Oversized and malformed requests to every RPC of a real coordinator over
// loopback TCP: each gets its status code, the coordinator keeps serving, and
// the database is exactly as before.
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "megabatch/v1/megabatch.grpc.pb.h"
#include "server/coordinator.h"
#include "tests/testing/coordinator_fixture.h"
#include "tests/testing/process.h"
#include "tests/testing/report_fixture.h"

namespace megabatch {
namespace {

using ::testing::HasSubstr;
using Code = grpc::StatusCode;

constexpr const char* kSpec =
    "name: target\noptimizers: [{name: sgd}]\nbatch_sizes: [128, 256]\nbase: "
    "{lr: 0.1}\n";

class HostileInputTest : public testing::CoordinatorFixture {
 protected:
  void SetUp() override {
    CoordinatorOptions options;
    // Nothing may change the file on its own during the test.
    options.scheduler.lease_timeout = std::chrono::hours(1);
    options.max_points_per_second = 1000;
    // Over TCP: raw and oversized messages go through the real transport.
    StartCoordinator(options, /*in_process=*/false);
    if (HasFatalFailure()) return;
    // Some state worth corrupting: a sweep, a worker holding a lease, metrics.
    v1::SubmitSweepResponse submitted;
    ASSERT_TRUE(Submit(sweeps_.get(), kSpec, &submitted).ok());
    sweep_id_ = submitted.sweep_id();
    ASSERT_TRUE(Register(workers_.get(), &worker_id_).ok());
    v1::LeaseTrialResponse leased;
    ASSERT_TRUE(Lease(workers_.get(), worker_id_, &leased).ok());
    ASSERT_TRUE(leased.has_lease());
    lease_ = leased.lease();
    ASSERT_TRUE(Report(Points(10)).ok());
  }

  std::vector<v1::MetricPoint> Points(int n, int first_step = 1) {
    std::vector<v1::MetricPoint> out(n);
    for (int i = 0; i < n; ++i) {
      out[i].set_name("train_loss");
      out[i].set_step(first_step + i);
      out[i].set_value(1.0 / (i + 1));
    }
    return out;
  }

  grpc::Status Report(const std::vector<v1::MetricPoint>& points,
                      const v1::TrialLease* lease = nullptr) {
    grpc::ClientContext ctx;
    v1::ReportMetricsRequest req;
    req.set_worker_id(worker_id_);
    *req.mutable_lease() = lease ? *lease : lease_;
    for (const auto& p : points) *req.add_points() = p;
    v1::ReportMetricsResponse resp;
    return workers_->ReportMetrics(&ctx, req, &resp);
  }

  // Sends raw bytes as the request of `method` (e.g.
  // "/megabatch.v1.SweepService/GetSweep").
  grpc::Status RawCall(const std::string& method, const std::string& bytes) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext ctx;
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1), response;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    grpc::Status status;
    stub.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response,
                   [&](grpc::Status s) {
                     std::lock_guard<std::mutex> lock(mu);
                     status = s;
                     done = true;
                     cv.notify_all();
                   });
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return done; })) {
      return grpc::Status(Code::DEADLINE_EXCEEDED, "no answer");
    }
    return status;
  }

  int64_t sweep_id_ = 0, worker_id_ = 0;
  v1::TrialLease lease_;
};

TEST_F(HostileInputTest, EveryRpcRefusesBadInputAndNothingChanges) {
  const std::string before = testing::DumpDatabase(options_.db_path);
  struct Case {
    std::string name;
    Code code;
    std::string says;  // in the message ("" for gRPC's own refusals)
    std::function<grpc::Status()> call;
  };
  auto submit = [this](const std::string& spec,
                       const std::string& request_id = "") {
    grpc::ClientContext ctx;
    v1::SubmitSweepRequest req;
    req.set_spec(spec);
    req.set_request_id(request_id);
    v1::SubmitSweepResponse resp;
    return sweeps_->SubmitSweep(&ctx, req, &resp);
  };
  std::string many_trials =
      "name: big\noptimizers: [{name: sgd}]\nbatch_sizes: [128]\n"
      "base: {lr: 0.1}\nlr_multipliers: [";
  for (int i = 0; i < 200; ++i)
    many_trials += (i ? ", " : "") + std::to_string(1 + i);
  many_trials += "]\nseeds: [";
  for (int i = 0; i < 100; ++i)
    many_trials += (i ? ", " : "") + std::to_string(i);
  many_trials += "]\n";
  v1::TrialLease stale = lease_;
  stale.set_lease_id(lease_.lease_id() + 7);

  const std::vector<Case> cases = {
      {"SubmitSweep: 2 MiB spec", Code::INVALID_ARGUMENT, "bytes",
       [&] { return submit(std::string(2 << 20, '#')); }},
      {"SubmitSweep: 20 MiB message", Code::RESOURCE_EXHAUSTED, "",
       [&] { return submit(std::string(20 << 20, 'x')); }},
      {"SubmitSweep: not YAML", Code::INVALID_ARGUMENT, "spec",
       [&] { return submit("{{{ [[[ :::"); }},
      {"SubmitSweep: 20,000 trials", Code::INVALID_ARGUMENT, "at most 10000",
       [&] { return submit(many_trials); }},
      {"SubmitSweep: 10 kB request id", Code::INVALID_ARGUMENT, "request_id",
       [&] { return submit(kSpec, std::string(10000, 'r')); }},
      {"SubmitSweep: 10 kB name", Code::INVALID_ARGUMENT, "name",
       [&] {
         return submit("name: " + std::string(10000, 'n') +
                       "\noptimizers: [{name: sgd}]\n"
                       "batch_sizes: [128]\nbase: {lr: 0.1}\n");
       }},
      {"GetSweep: -1", Code::INVALID_ARGUMENT, "sweep_id",
       [&] {
         grpc::ClientContext ctx;
         v1::GetSweepRequest req;
         req.set_sweep_id(-1);
         v1::Sweep resp;
         return sweeps_->GetSweep(&ctx, req, &resp);
       }},
      {"CancelSweep: 0", Code::INVALID_ARGUMENT, "sweep_id",
       [&] {
         grpc::ClientContext ctx;
         v1::CancelSweepRequest req;
         v1::Sweep resp;
         return sweeps_->CancelSweep(&ctx, req, &resp);
       }},
      {"CancelSweep: unknown", Code::NOT_FOUND, "sweep 424242",
       [&] {
         grpc::ClientContext ctx;
         v1::CancelSweepRequest req;
         req.set_sweep_id(424242);
         v1::Sweep resp;
         return sweeps_->CancelSweep(&ctx, req, &resp);
       }},
      {"ListTrials: -7", Code::INVALID_ARGUMENT, "sweep_id",
       [&] {
         grpc::ClientContext ctx;
         v1::ListTrialsRequest req;
         req.set_sweep_id(-7);
         v1::ListTrialsResponse resp;
         return sweeps_->ListTrials(&ctx, req, &resp);
       }},
      {"WatchSweep: 0", Code::INVALID_ARGUMENT, "sweep_id",
       [&] {
         grpc::ClientContext ctx;
         v1::WatchSweepRequest req;
         auto reader = sweeps_->WatchSweep(&ctx, req);
         v1::WatchSweepResponse resp;
         while (reader->Read(&resp)) {
         }
         return reader->Finish();
       }},
      {"Query: a write", Code::INVALID_ARGUMENT, "read-only",
       [&] {
         grpc::ClientContext ctx;
         v1::QueryRequest req;
         req.set_sql("DELETE FROM metrics");
         v1::QueryResponse resp;
         return sweeps_->Query(&ctx, req, &resp);
       }},
      {"Query: 2 MiB of SQL", Code::INVALID_ARGUMENT, "",
       [&] {
         grpc::ClientContext ctx;
         v1::QueryRequest req;
         req.set_sql("SELECT " + std::string(2 << 20, '('));
         v1::QueryResponse resp;
         return sweeps_->Query(&ctx, req, &resp);
       }},
      {"Query: max_rows -1", Code::INVALID_ARGUMENT, "max_rows",
       [&] {
         grpc::ClientContext ctx;
         v1::QueryRequest req;
         req.set_sql("SELECT 1");
         req.set_max_rows(-1);
         v1::QueryResponse resp;
         return sweeps_->Query(&ctx, req, &resp);
       }},
      {"GetSweepReport: -1", Code::INVALID_ARGUMENT, "sweep_id",
       [&] {
         grpc::ClientContext ctx;
         v1::GetSweepReportRequest req;
         req.set_sweep_id(-1);
         v1::SweepReport resp;
         return sweeps_->GetSweepReport(&ctx, req, &resp);
       }},
      {"ExportMetrics: 1000 names", Code::INVALID_ARGUMENT, "names",
       [&] {
         grpc::ClientContext ctx;
         v1::ExportMetricsRequest req;
         req.set_sweep_id(sweep_id_);
         for (int i = 0; i < 1000; ++i) req.add_names("m" + std::to_string(i));
         auto reader = sweeps_->ExportMetrics(&ctx, req);
         v1::ExportMetricsResponse resp;
         while (reader->Read(&resp)) {
         }
         return reader->Finish();
       }},
      {"RegisterWorker: 10 kB name", Code::INVALID_ARGUMENT, "name",
       [&] {
         grpc::ClientContext ctx;
         v1::RegisterWorkerRequest req;
         req.set_name(std::string(10000, 'w'));
         req.set_slots(1);
         v1::RegisterWorkerResponse resp;
         return workers_->RegisterWorker(&ctx, req, &resp);
       }},
      {"RegisterWorker: a million slots", Code::INVALID_ARGUMENT, "slots",
       [&] {
         grpc::ClientContext ctx;
         v1::RegisterWorkerRequest req;
         req.set_name("w");
         req.set_slots(1000000);
         v1::RegisterWorkerResponse resp;
         return workers_->RegisterWorker(&ctx, req, &resp);
       }},
      {"Heartbeat: 100,000 running trials", Code::INVALID_ARGUMENT, "running",
       [&] {
         grpc::ClientContext ctx;
         v1::HeartbeatRequest req;
         req.set_worker_id(worker_id_);
         for (int i = 0; i < 100000; ++i) *req.add_running() = lease_;
         v1::HeartbeatResponse resp;
         return workers_->Heartbeat(&ctx, req, &resp);
       }},
      {"Heartbeat: GPU utilisation 7", Code::INVALID_ARGUMENT,
       "utilization_ratio",
       [&] {
         grpc::ClientContext ctx;
         v1::HeartbeatRequest req;
         req.set_worker_id(worker_id_);
         req.add_gpus()->set_utilization_ratio(7);
         v1::HeartbeatResponse resp;
         return workers_->Heartbeat(&ctx, req, &resp);
       }},
      {"LeaseTrial: wait a billion ms", Code::INVALID_ARGUMENT, "wait_ms",
       [&] {
         grpc::ClientContext ctx;
         v1::LeaseTrialRequest req;
         req.set_worker_id(worker_id_);
         req.set_wait_ms(1000000000);
         v1::LeaseTrialResponse resp;
         return workers_->LeaseTrial(&ctx, req, &resp);
       }},
      {"ReportMetrics: 100,001 points", Code::RESOURCE_EXHAUSTED,
       "at most 100000", [&] { return Report(Points(100001, 100)); }},
      {"ReportMetrics: empty name", Code::INVALID_ARGUMENT, "points[0].name",
       [&] {
         auto p = Points(1, 100);
         p[0].set_name("");
         return Report(p);
       }},
      {"ReportMetrics: negative step", Code::INVALID_ARGUMENT, "points[0].step",
       [&] { return Report(Points(1, -5)); }},
      {"ReportMetrics: stale lease", Code::ABORTED, "lease",
       [&] { return Report(Points(1, 100), &stale); }},
      {"FinishTrial: outcome RUNNING", Code::INVALID_ARGUMENT, "outcome",
       [&] {
         grpc::ClientContext ctx;
         v1::FinishTrialRequest req;
         req.set_worker_id(worker_id_);
         *req.mutable_lease() = lease_;
         req.set_outcome(v1::TRIAL_STATE_RUNNING);
         v1::FinishTrialResponse resp;
         return workers_->FinishTrial(&ctx, req, &resp);
       }},
      {"FinishTrial: 1 MB stderr", Code::INVALID_ARGUMENT, "stderr_tail",
       [&] {
         grpc::ClientContext ctx;
         v1::FinishTrialRequest req;
         req.set_worker_id(worker_id_);
         *req.mutable_lease() = lease_;
         req.set_outcome(v1::TRIAL_STATE_FAILED);
         req.set_stderr_tail(std::string(1 << 20, 'e'));
         v1::FinishTrialResponse resp;
         return workers_->FinishTrial(&ctx, req, &resp);
       }},
      {"FinishTrial: stale lease", Code::ABORTED, "lease",
       [&] {
         grpc::ClientContext ctx;
         v1::FinishTrialRequest req;
         req.set_worker_id(worker_id_);
         *req.mutable_lease() = stale;
         req.set_outcome(v1::TRIAL_STATE_COMPLETED);
         v1::FinishTrialResponse resp;
         return workers_->FinishTrial(&ctx, req, &resp);
       }},
  };
  for (const Case& c : cases) {
    grpc::Status s = c.call();
    EXPECT_EQ(s.error_code(), c.code) << c.name << ": " << s.error_message();
    if (!c.says.empty()) {
      EXPECT_THAT(s.error_message(), HasSubstr(c.says)) << c.name;
    }
  }
  // A string field that is not UTF-8 makes the request no valid protobuf
  // (proto3): gRPC refuses it before any handler runs (INTERNAL, its code
  // for an unparseable request).
  EXPECT_FALSE(submit(std::string("\0\xff\xfe name: x", 11)).ok());
  // Bytes that are no protobuf at all, to every method.
  const char* methods[] = {
      "SweepService/SubmitSweep",     "SweepService/GetSweep",
      "SweepService/ListSweeps",      "SweepService/CancelSweep",
      "SweepService/ListTrials",      "SweepService/ListWorkers",
      "SweepService/Query",           "SweepService/GetSweepReport",
      "WorkerService/RegisterWorker", "WorkerService/Heartbeat",
      "WorkerService/LeaseTrial",     "WorkerService/ReportMetrics",
      "WorkerService/FinishTrial"};
  for (const char* m : methods) {
    grpc::Status s = RawCall(std::string("/megabatch.v1.") + m,
                             "\xff\xff\xff\xff\x0f garbage");
    EXPECT_FALSE(s.ok()) << m;
    EXPECT_NE(s.error_code(), Code::UNKNOWN) << m << ": " << s.error_message();
  }
  EXPECT_EQ(testing::DumpDatabase(options_.db_path), before);
  // Still serving, the data intact.
  grpc::ClientContext ctx;
  v1::ListTrialsRequest req;
  req.set_sweep_id(sweep_id_);
  v1::ListTrialsResponse resp;
  ASSERT_TRUE(sweeps_->ListTrials(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.trials_size(), 2);
}

// A 40 KB JSON spec nested 20,000 deep segfaulted the coordinator; a
// 500-byte YAML spec of aliases took gigabytes before it was refused.
TEST_F(HostileInputTest, SpecBombsAreRefusedAndTheCoordinatorServesOn) {
  const std::string before = testing::DumpDatabase(options_.db_path);
  std::string aliases = "name: bomb\nx0: &x0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n";
  for (int level = 1; level <= 9; ++level) {
    aliases +=
        "x" + std::to_string(level) + ": &x" + std::to_string(level) + " [";
    for (int k = 0; k < 10; ++k) {
      aliases += (k ? ", *x" : "*x") + std::to_string(level - 1);
    }
    aliases += "]\n";
  }
  for (const std::string& spec :
       {"{\"name\":\"d\",\"x\":" + std::string(20000, '[') +
            std::string(20000, ']') + "}",
        aliases}) {
    v1::SubmitSweepResponse resp;
    grpc::Status s = Submit(sweeps_.get(), spec, &resp);
    EXPECT_EQ(s.error_code(), Code::INVALID_ARGUMENT) << s.error_message();
  }
  EXPECT_EQ(testing::DumpDatabase(options_.db_path), before);
  v1::SubmitSweepResponse ok;
  EXPECT_TRUE(Submit(sweeps_.get(), kSpec, &ok).ok());
}

TEST_F(HostileInputTest, AWorkerOverItsPointRateIsToldToRetryAndLosesNothing) {
  // The bucket holds 1,000 points a second; SetUp spent 10 of them.
  ASSERT_TRUE(Report(Points(900, 100)).ok());
  grpc::Status over = Report(Points(500, 1000));
  EXPECT_EQ(over.error_code(), Code::RESOURCE_EXHAUSTED);
  EXPECT_THAT(over.error_message(), HasSubstr("retry in"));
  // The refused batch stored nothing; once the bucket refills, it goes in.
  auto db_rows = [&] {
    return testing::DumpDatabase(options_.db_path).find("|1:1499|") !=
           std::string::npos;
  };
  EXPECT_FALSE(db_rows());
  EXPECT_TRUE(testing::WaitUntil([&] { return Report(Points(500, 1000)).ok(); },
                                 std::chrono::seconds(5)));
  EXPECT_TRUE(db_rows());
}

}  // namespace
}  // namespace megabatch
