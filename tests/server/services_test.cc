#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "megabatch/v1/megabatch.grpc.pb.h"
#include "server/coordinator.h"
#include "server/store/db.h"
#include "tests/testing/coordinator_fixture.h"
#include "tests/testing/http.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"

namespace megabatch {
namespace {

using ::testing::HasSubstr;

constexpr const char* kSpec = R"yaml(
name: service-test
optimizers: [{name: sgd}]
batch_sizes: [128, 256]
base: {lr: 0.1}
)yaml";

class ServicesTest : public testing::CoordinatorFixture {
 protected:
  void SetUp() override { StartCoordinator(); }

  grpc::Status Submit(const std::string& spec, v1::SubmitSweepResponse* resp,
                      const std::string& request_id = "") {
    return CoordinatorFixture::Submit(sweeps_.get(), spec, resp, request_id);
  }

  int SweepCount() {
    grpc::ClientContext ctx;
    v1::ListSweepsResponse resp;
    EXPECT_TRUE(sweeps_->ListSweeps(&ctx, {}, &resp).ok());
    return resp.sweeps_size();
  }

  int64_t RegisterWorker() {
    int64_t id = 0;
    EXPECT_TRUE(Register(workers_.get(), &id).ok());
    return id;
  }

  // True once the sweep has no running trial (bounded wait).
  bool WaitUntilNoRunningTrials(int64_t sweep_id) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      auto sweep = coordinator_->store()->GetSweep(sweep_id);
      if (sweep.ok() && sweep->trial_counts[store::TrialState::kRunning] == 0) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
};

// 22,000 registered workers made one ListWorkers answer of 5 MB, past the
// 4 MiB the API promises: it is paged.
// Open streams hold a coordinator thread each: a caller may hold 16.
TEST_F(ServicesTest, ACallerMayHoldSixteenStreamsAtOnce) {
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(Submit("name: s\noptimizers: [{name: sgd}]\n"
                     "batch_sizes: [128]\nbase: {lr: 0.1}\n",
                     &submitted)
                  .ok());
  struct Stream {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<v1::WatchSweepResponse>> reader;
  };
  auto open = [&] {
    auto s = std::make_unique<Stream>();
    v1::WatchSweepRequest req;
    req.set_sweep_id(submitted.sweep_id());
    s->reader = sweeps_->WatchSweep(&s->ctx, req);
    return s;
  };
  std::vector<std::unique_ptr<Stream>> streams;
  for (int i = 0; i < service::SweepServiceImpl::kMaxStreamsPerCaller; ++i) {
    streams.push_back(open());
    v1::WatchSweepResponse first;
    ASSERT_TRUE(streams.back()->reader->Read(&first)) << "stream " << i;
  }
  auto extra = open();
  v1::WatchSweepResponse none;
  EXPECT_FALSE(extra->reader->Read(&none));
  grpc::Status refused = extra->reader->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("at most 16 at once"));
  // Closing one frees its slot.
  streams.back()->ctx.TryCancel();
  streams.back()->reader->Finish();
  streams.pop_back();
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        auto again = open();
        v1::WatchSweepResponse first;
        const bool ok = again->reader->Read(&first);
        again->ctx.TryCancel();
        again->reader->Finish();
        return ok;
      },
      std::chrono::seconds(10)));
  for (auto& s : streams) {
    s->ctx.TryCancel();
    s->reader->Finish();
  }
}

TEST_F(ServicesTest, ListWorkersIsPagedAndEachWorkerComesOnce) {
  constexpr int kWorkers = 7;
  for (int i = 0; i < kWorkers; ++i) {
    ASSERT_TRUE(
        Register(workers_.get(), nullptr, 1, "w" + std::to_string(i)).ok());
  }
  v1::ListWorkersRequest req;
  req.set_page_size(3);
  std::vector<std::string> names;
  int pages = 0;
  do {
    grpc::ClientContext ctx;
    v1::ListWorkersResponse resp;
    ASSERT_TRUE(sweeps_->ListWorkers(&ctx, req, &resp).ok());
    EXPECT_LE(resp.workers_size(), 3);
    for (const auto& w : resp.workers()) names.push_back(w.name());
    req.set_page_token(resp.next_page_token());
    ++pages;
  } while (!req.page_token().empty());
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(names.size(), static_cast<size_t>(kWorkers));
  for (int i = 0; i < kWorkers; ++i)
    EXPECT_EQ(names[i], "w" + std::to_string(i));
  grpc::ClientContext ctx;
  req.set_page_token("sweeps:0:1");
  v1::ListWorkersResponse resp;
  EXPECT_EQ(sweeps_->ListWorkers(&ctx, req, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServicesTest, InvalidSpecIsInvalidArgumentAndStoresNothing) {
  v1::SubmitSweepResponse resp;
  grpc::Status s = Submit(
      "name: x\noptimizers: [{name: nadam}]\n"
      "batch_sizes: [1]\nbase: {lr: 1}\n",
      &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("optimizers[0].name"));
  EXPECT_EQ(SweepCount(), 0);
}

TEST_F(ServicesTest, UnknownFormatIsInvalidArgument) {
  grpc::ClientContext ctx;
  v1::SubmitSweepRequest req;
  req.set_spec(kSpec);
  req.set_format("toml");
  v1::SubmitSweepResponse resp;
  grpc::Status s = sweeps_->SubmitSweep(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("format"));
}

TEST_F(ServicesTest, SubmitWithSameRequestIdCreatesOneSweep) {
  v1::SubmitSweepResponse a, b;
  ASSERT_TRUE(Submit(kSpec, &a, "retry-me").ok());
  ASSERT_TRUE(Submit(kSpec, &b, "retry-me").ok());
  EXPECT_EQ(a.sweep_id(), b.sweep_id());
  EXPECT_EQ(b.trials(), 2);
  EXPECT_EQ(SweepCount(), 1);
}

TEST_F(ServicesTest, UnknownSweepIsNotFoundAndBadIdIsInvalid) {
  grpc::ClientContext ctx;
  v1::GetSweepRequest req;
  req.set_sweep_id(42);
  v1::Sweep sweep;
  grpc::Status s = sweeps_->GetSweep(&ctx, req, &sweep);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("sweep 42"));

  grpc::ClientContext ctx2;
  v1::CancelSweepRequest cancel;
  cancel.set_sweep_id(-1);
  s = sweeps_->CancelSweep(&ctx2, cancel, &sweep);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServicesTest, CancelTwiceIsFailedPrecondition) {
  v1::SubmitSweepResponse resp;
  ASSERT_TRUE(Submit(kSpec, &resp).ok());
  v1::CancelSweepRequest req;
  req.set_sweep_id(resp.sweep_id());
  v1::Sweep sweep;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(sweeps_->CancelSweep(&ctx, req, &sweep).ok());
    EXPECT_EQ(sweep.state(), v1::SWEEP_STATE_CANCELLED);
  }
  grpc::ClientContext ctx;
  grpc::Status s = sweeps_->CancelSweep(&ctx, req, &sweep);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(ServicesTest, LeaseReportFinishRoundTrip) {
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(Submit(kSpec, &submitted).ok());
  int64_t worker = RegisterWorker();

  v1::LeaseTrialResponse lease;
  {
    grpc::ClientContext ctx;
    v1::LeaseTrialRequest req;
    req.set_worker_id(worker);
    req.set_wait_ms(1000);
    ASSERT_TRUE(workers_->LeaseTrial(&ctx, req, &lease).ok());
  }
  ASSERT_TRUE(lease.has_lease());
  EXPECT_THAT(lease.config_json(), HasSubstr("\"batch_size\":128"));

  v1::ReportMetricsRequest report;
  report.set_worker_id(worker);
  *report.mutable_lease() = lease.lease();
  auto* p = report.add_points();
  p->set_name("train_loss");
  p->set_step(1);
  p->set_value(0.5);
  {
    grpc::ClientContext ctx;
    v1::ReportMetricsResponse resp;
    ASSERT_TRUE(workers_->ReportMetrics(&ctx, report, &resp).ok());
    EXPECT_EQ(resp.accepted(), 1);
  }
  {
    // A report under a stale lease is ABORTED.
    report.mutable_lease()->set_lease_id(lease.lease().lease_id() + 7);
    grpc::ClientContext ctx;
    v1::ReportMetricsResponse resp;
    EXPECT_EQ(workers_->ReportMetrics(&ctx, report, &resp).error_code(),
              grpc::StatusCode::ABORTED);
  }
  v1::FinishTrialRequest finish;
  finish.set_worker_id(worker);
  *finish.mutable_lease() = lease.lease();
  finish.set_outcome(v1::TRIAL_STATE_QUEUED);
  {
    grpc::ClientContext ctx;
    v1::FinishTrialResponse resp;
    EXPECT_EQ(workers_->FinishTrial(&ctx, finish, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  finish.set_outcome(v1::TRIAL_STATE_COMPLETED);
  {
    grpc::ClientContext ctx;
    v1::FinishTrialResponse resp;
    ASSERT_TRUE(workers_->FinishTrial(&ctx, finish, &resp).ok());
    EXPECT_EQ(resp.state(), v1::TRIAL_STATE_COMPLETED);
  }
  grpc::ClientContext ctx;
  v1::ListTrialsRequest list;
  list.set_sweep_id(submitted.sweep_id());
  v1::ListTrialsResponse trials;
  ASSERT_TRUE(sweeps_->ListTrials(&ctx, list, &trials).ok());
  EXPECT_EQ(trials.trials(0).state(), v1::TRIAL_STATE_COMPLETED);
  EXPECT_DOUBLE_EQ(trials.trials(0).latest_metrics().at("train_loss"), 0.5);
}

TEST_F(ServicesTest, LeaseLongPollWakesOnSubmit) {
  int64_t worker = RegisterWorker();
  v1::LeaseTrialResponse lease;
  grpc::Status status;
  std::thread poller([&] {
    grpc::ClientContext ctx;
    v1::LeaseTrialRequest req;
    req.set_worker_id(worker);
    req.set_wait_ms(20000);
    status = workers_->LeaseTrial(&ctx, req, &lease);
  });
  v1::SubmitSweepResponse resp;
  ASSERT_TRUE(Submit(kSpec, &resp).ok());
  auto start = std::chrono::steady_clock::now();
  poller.join();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(lease.has_lease());
  // Woken by the submit, not by the 20 s timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST_F(ServicesTest, ManyLongPollsWokenByOneSubmitEachGetADistinctTrial) {
  // 12 workers wait; a sweep of 8 trials arrives: 8 polls get one trial each
  // (served in batches), the other 4 wait out their poll with nothing.
  constexpr int kWorkers = 12;
  std::vector<int64_t> ids;
  for (int i = 0; i < kWorkers; ++i) ids.push_back(RegisterWorker());
  std::vector<v1::LeaseTrialResponse> leases(kWorkers);
  std::vector<grpc::Status> statuses(kWorkers);
  std::vector<std::thread> pollers;
  for (int i = 0; i < kWorkers; ++i) {
    pollers.emplace_back([&, i] {
      grpc::ClientContext ctx;
      v1::LeaseTrialRequest req;
      req.set_worker_id(ids[i]);
      req.set_wait_ms(3000);
      statuses[i] = workers_->LeaseTrial(&ctx, req, &leases[i]);
    });
  }
  v1::SubmitSweepResponse resp;
  ASSERT_TRUE(Submit("name: eight\noptimizers: [{name: sgd}, {name: adamw}]\n"
                     "batch_sizes: [128, 256, 512, 1024]\nbase: {lr: 0.1}\n",
                     &resp)
                  .ok());
  for (auto& t : pollers) t.join();
  std::set<int64_t> trials;
  for (int i = 0; i < kWorkers; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    if (leases[i].has_lease()) trials.insert(leases[i].lease().trial_id());
  }
  EXPECT_EQ(trials.size(), 8u);
  auto stored = coordinator_->store()->ListTrials(resp.sweep_id());
  ASSERT_OK(stored);
  for (const auto& t : *stored) {
    EXPECT_EQ(t.state, store::TrialState::kRunning) << "trial " << t.id;
    EXPECT_EQ(t.attempts, 1) << "trial " << t.id;
    EXPECT_EQ(trials.count(t.id), 1u) << "trial " << t.id;
  }
}

TEST_F(ServicesTest, AParkedLongPollAnswersUnavailableWhenTheCoordinatorStops) {
  int64_t worker = RegisterWorker();
  grpc::Status status;
  std::atomic<bool> sent{false};
  // Over TCP: gRPC 1.51's in-process transport can crash creating a call
  // while its server shuts down (seen here about once in 20 runs), which is
  // not what this test is about.
  auto tcp = v1::WorkerService::NewStub(
      grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials()));
  std::thread poller([&] {
    grpc::ClientContext ctx;
    v1::LeaseTrialRequest req;
    req.set_worker_id(worker);
    req.set_wait_ms(60000);
    v1::LeaseTrialResponse resp;
    sent = true;
    status = tcp->LeaseTrial(&ctx, req, &resp);
  });
  while (!sent) std::this_thread::yield();
  const auto start = std::chrono::steady_clock::now();
  coordinator_->Shutdown();
  poller.join();
  // Whether the poll was parked or not yet arrived, it ends at once, not
  // after its 60 s.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_FALSE(status.ok());
}

TEST_F(ServicesTest, LeaseForACallerThatWentAwayIsReleased) {
  int64_t worker = RegisterWorker();
  {
    // The caller gives up (deadline) while the server long-polls.
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(300));
    v1::LeaseTrialRequest req;
    req.set_worker_id(worker);
    req.set_wait_ms(60000);
    v1::LeaseTrialResponse resp;
    EXPECT_EQ(workers_->LeaseTrial(&ctx, req, &resp).error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(Submit(kSpec, &submitted).ok());
  // Whether or not the abandoned poll saw the sweep, no trial is left leased
  // to nobody, and no attempt is consumed.
  ASSERT_TRUE(WaitUntilNoRunningTrials(submitted.sweep_id()));
  grpc::ClientContext ctx;
  v1::LeaseTrialRequest req;
  req.set_worker_id(worker);
  req.set_wait_ms(1000);
  v1::LeaseTrialResponse lease;
  ASSERT_TRUE(workers_->LeaseTrial(&ctx, req, &lease).ok());
  ASSERT_TRUE(lease.has_lease());
  auto trials = coordinator_->store()->ListTrials(submitted.sweep_id());
  for (const auto& t : *trials) {
    EXPECT_LE(t.attempts, 1) << "trial " << t.id;
  }
}

// The synchronous server held a thread per parked long poll (1,016 threads
// for 1,000 idle workers): LeaseTrial is a callback now, and 500 parked
// polls cost no threads; cancelling them releases every one at once.
TEST_F(ServicesTest, ParkedLongPollsHoldNoCoordinatorThreads) {
  constexpr int kPolls = 500;
  const auto threads = [] {
    return std::distance(std::filesystem::directory_iterator("/proc/self/task"),
                         std::filesystem::directory_iterator());
  };
  std::vector<int64_t> ids(kPolls);
  for (int64_t& id : ids) ASSERT_TRUE(Register(workers_.get(), &id).ok());
  const auto before = threads();
  struct Poll {
    grpc::ClientContext ctx;
    v1::LeaseTrialRequest req;
    v1::LeaseTrialResponse resp;
  };
  std::vector<std::unique_ptr<Poll>> polls;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<grpc::StatusCode> codes;
  for (int64_t id : ids) {
    auto poll = std::make_unique<Poll>();
    poll->req.set_worker_id(id);
    poll->req.set_wait_ms(60000);
    workers_->async()->LeaseTrial(&poll->ctx, &poll->req, &poll->resp,
                                  [&](grpc::Status s) {
                                    std::lock_guard<std::mutex> lock(mu);
                                    codes.push_back(s.error_code());
                                    cv.notify_all();
                                  });
    polls.push_back(std::move(poll));
  }
  ASSERT_TRUE(testing::WaitUntil(
      [&] { return coordinator_->scheduler()->WaitingLeases() == kPolls; },
      std::chrono::seconds(30)));
  const auto during = threads();
  EXPECT_LT(during - before, 50) << before << " threads before, " << during
                                 << " with " << kPolls << " polls parked";
  for (auto& poll : polls) poll->ctx.TryCancel();
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] {
    return codes.size() == static_cast<size_t>(kPolls);
  }));
  lock.unlock();
  EXPECT_TRUE(testing::WaitUntil(
      [&] { return coordinator_->scheduler()->WaitingLeases() == 0; },
      std::chrono::seconds(10)));
  for (grpc::StatusCode code : codes) {
    EXPECT_EQ(code, grpc::StatusCode::CANCELLED);
  }
}

// Heartbeats were half of a busy fleet's calls: a report may carry the
// worker's heartbeat, which keeps it alive and answers what to stop.
TEST_F(ServicesTest, AReportCarriesItsWorkersHeartbeat) {
  int64_t worker = 0;
  ASSERT_TRUE(Register(workers_.get(), &worker, /*slots=*/2).ok());
  // One trial of each of two sweeps; the second sweep will be cancelled.
  v1::TrialLease kept, stopped;
  int64_t cancelled_sweep = 0;
  for (v1::TrialLease* lease : {&kept, &stopped}) {
    v1::SubmitSweepResponse submitted;
    ASSERT_TRUE(Submit("name: s\noptimizers: [{name: sgd}]\n"
                       "batch_sizes: [128]\nbase: {lr: 0.1}\n",
                       &submitted)
                    .ok());
    cancelled_sweep = submitted.sweep_id();
    v1::LeaseTrialResponse leased;
    ASSERT_TRUE(Lease(workers_.get(), worker, &leased).ok());
    ASSERT_TRUE(leased.has_lease());
    *lease = leased.lease();
  }
  auto report = [&](int64_t beat_worker_id, v1::ReportMetricsResponse* resp) {
    grpc::ClientContext ctx;
    v1::ReportMetricsRequest req;
    req.set_worker_id(worker);
    *req.mutable_lease() = kept;
    auto* p = req.add_points();
    p->set_name("train_loss");
    p->set_step(1);
    p->set_value(0.5);
    req.mutable_heartbeat()->set_worker_id(beat_worker_id);
    *req.mutable_heartbeat()->add_running() = kept;
    *req.mutable_heartbeat()->add_running() = stopped;
    return workers_->ReportMetrics(&ctx, req, resp);
  };
  const auto last_seen = [&] {
    auto workers = coordinator_->store()->ListWorkers();
    EXPECT_TRUE(workers.ok());
    for (const auto& w : *workers) {
      if (w.id == worker) return w.last_heartbeat_at;
    }
    return 0.0;
  };
  const double registered_at = last_seen();
  v1::ReportMetricsResponse resp;
  ASSERT_TRUE(report(worker, &resp).ok());
  EXPECT_EQ(resp.accepted(), 1);
  EXPECT_EQ(resp.stop_trial_ids_size(), 0);
  EXPECT_GT(last_seen(), registered_at);
  // Another worker's heartbeat cannot ride on this one's report.
  grpc::Status other = report(worker + 1, &resp);
  EXPECT_EQ(other.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(other.error_message(), HasSubstr("heartbeat.worker_id"));
  grpc::ClientContext ctx;
  v1::CancelSweepRequest cancel;
  cancel.set_sweep_id(cancelled_sweep);
  v1::Sweep cancelled;
  ASSERT_TRUE(sweeps_->CancelSweep(&ctx, cancel, &cancelled).ok());
  v1::ReportMetricsResponse after;
  ASSERT_TRUE(report(worker, &after).ok());
  EXPECT_THAT(after.stop_trial_ids(),
              ::testing::ElementsAre(stopped.trial_id()));
}

TEST_F(ServicesTest, MalformedWorkerRequestsNameTheField) {
  grpc::ClientContext ctx;
  v1::RegisterWorkerRequest req;
  req.set_name("w");
  req.set_slots(0);
  v1::RegisterWorkerResponse resp;
  grpc::Status s = workers_->RegisterWorker(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("slots"));

  grpc::ClientContext ctx2;
  v1::LeaseTrialRequest lease;
  lease.set_worker_id(12345);
  v1::LeaseTrialResponse lease_resp;
  s = workers_->LeaseTrial(&ctx2, lease, &lease_resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("worker 12345"));
}

TEST_F(ServicesTest, ResultRpcsNameTheBadField) {
  auto query = [&](const std::string& sql, int64_t max_rows,
                   int32_t timeout_ms) {
    grpc::ClientContext ctx;
    v1::QueryRequest req;
    req.set_sql(sql);
    req.set_max_rows(max_rows);
    req.set_timeout_ms(timeout_ms);
    v1::QueryResponse resp;
    return sweeps_->Query(&ctx, req, &resp);
  };
  for (const auto& [status, field] :
       std::vector<std::pair<grpc::Status, std::string>>{
           {query("", 0, 0), "sql: required"},
           {query("SELECT 1", -1, 0), "max_rows"},
           {query("SELECT 1", 0, 300001), "timeout_ms"},
           {query(std::string(200000, ' ') + "SELECT 1", 0, 0),
            "sql: at most"}}) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_THAT(status.error_message(), HasSubstr(field));
  }
  {
    grpc::ClientContext ctx;
    v1::GetSweepReportRequest req;
    v1::SweepReport resp;
    auto s = sweeps_->GetSweepReport(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("sweep_id"));
  }
  {
    grpc::ClientContext ctx;
    v1::GetSweepReportRequest req;
    req.set_sweep_id(42);
    v1::SweepReport resp;
    EXPECT_EQ(sweeps_->GetSweepReport(&ctx, req, &resp).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    v1::ExportMetricsRequest req;
    req.set_sweep_id(1);
    for (int i = 0; i < 101; ++i) req.add_names("n");
    auto reader = sweeps_->ExportMetrics(&ctx, req);
    v1::ExportMetricsResponse chunk;
    EXPECT_FALSE(reader->Read(&chunk));
    auto s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("names"));
  }
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(Submit(kSpec, &submitted).ok());
  grpc::ClientContext ctx;
  v1::GetSweepReportRequest req;
  req.set_sweep_id(submitted.sweep_id());
  v1::SweepReport report;
  ASSERT_TRUE(sweeps_->GetSweepReport(&ctx, req, &report).ok());
  EXPECT_EQ(report.sweep().name(), "service-test");
  EXPECT_EQ(report.rows_size(), 2);  // sgd at 128 and 256, nothing run yet
  EXPECT_FALSE(report.rows(0).has_steps_to_target());
}

TEST_F(ServicesTest,
       ATenThousandTrialSweepListsWatchesAndExportsUnderTheDefault4MiBLimit) {
  // 100 lrs x 100 seeds, each trial with 40 latest metrics (names as long as
  // the per-tensor diagnostics'): about 15 MB of trials in all.
  std::string lrs, seeds;
  for (int i = 1; i <= 100; ++i) {
    lrs += (i > 1 ? ", " : "") + std::to_string(i);
    seeds += (i > 1 ? ", " : "") + std::to_string(i);
  }
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(
      Submit("name: big\noptimizers: [{name: sgd}]\nbatch_sizes: [128]\n"
             "base: {lr: 0.001}\nlr_multipliers: [" +
                 lrs + "]\nseeds: [" + seeds + "]\n",
             &submitted)
          .ok());
  ASSERT_EQ(submitted.trials(), 10000);
  {
    auto db = store::Db::Open(options_.db_path);
    ASSERT_OK(db);
    ASSERT_TRUE((*db)
                    ->Exec(R"sql(
      WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n < 39)
      INSERT INTO metrics (trial_id, name, step, value, recorded_at)
        SELECT t.id, 'weight_norm/layers.' || k.n || '.attention.weight', 1, k.n, 1
        FROM trials t, k)sql")
                    .ok());
  }
  // A client as a user writes one: every gRPC default, 4 MiB receive limit.
  auto channel =
      grpc::CreateChannel("127.0.0.1:" + std::to_string(coordinator_->port()),
                          grpc::InsecureChannelCredentials());
  auto stub = v1::SweepService::NewStub(channel);
  constexpr size_t kLimit = 4 << 20;

  // ListTrials, page by page, every trial once in index order.
  v1::ListTrialsRequest req;
  req.set_sweep_id(submitted.sweep_id());
  int pages = 0, next_index = 0;
  size_t largest = 0, total = 0;
  do {
    grpc::ClientContext ctx;
    v1::ListTrialsResponse resp;
    grpc::Status s = stub->ListTrials(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    for (const auto& t : resp.trials()) {
      ASSERT_EQ(t.index(), next_index++);
      ASSERT_EQ(t.latest_metrics_size(), 40);
    }
    largest = std::max(largest, resp.ByteSizeLong());
    total += resp.ByteSizeLong();
    req.set_page_token(resp.next_page_token());
    ++pages;
  } while (!req.page_token().empty());
  EXPECT_EQ(next_index, 10000);
  EXPECT_GT(total, kLimit);  // one unpaged answer would not fit
  EXPECT_LE(largest, (1u << 20) + 4096);
  std::cout << "ListTrials: " << total << " bytes in " << pages
            << " pages, the largest " << largest << "\n";
  // A token from another listing is refused.
  {
    grpc::ClientContext ctx;
    v1::ListTrialsRequest bad;
    bad.set_sweep_id(submitted.sweep_id());
    bad.set_page_token("sweeps:0:7");
    v1::ListTrialsResponse resp;
    grpc::Status s = stub->ListTrials(&ctx, bad, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("page_token"));
  }

  // WatchSweep: the snapshot in bounded messages, each trial once.
  {
    grpc::ClientContext ctx;
    v1::WatchSweepRequest watch;
    watch.set_sweep_id(submitted.sweep_id());
    auto reader = stub->WatchSweep(&ctx, watch);
    v1::WatchSweepResponse update;
    std::set<int64_t> seen;
    size_t messages = 0, biggest = 0;
    while (reader->Read(&update)) {
      ++messages;
      biggest = std::max(biggest, update.ByteSizeLong());
      for (const auto& t : update.trials())
        EXPECT_TRUE(seen.insert(t.id()).second);
      if (update.snapshot_complete()) break;
    }
    EXPECT_EQ(seen.size(), 10000u);
    EXPECT_LE(biggest, (1u << 20) + 4096);
    std::cout << "WatchSweep snapshot: " << messages
              << " messages, the largest " << biggest << "\n";
    // With nothing changing, the next message carries the sweep and no trial.
    ASSERT_TRUE(reader->Read(&update));
    EXPECT_EQ(update.trials_size(), 0);
    EXPECT_EQ(update.sweep().trials_total(), 10000);
    ctx.TryCancel();
    reader->Finish();
  }

  // ExportMetrics: all 400,000 points, in chunks.
  {
    grpc::ClientContext ctx;
    v1::ExportMetricsRequest exp;
    exp.set_sweep_id(submitted.sweep_id());
    auto reader = stub->ExportMetrics(&ctx, exp);
    v1::ExportMetricsResponse chunk;
    size_t rows = 0;
    while (reader->Read(&chunk)) rows += chunk.rows_size();
    EXPECT_TRUE(reader->Finish().ok());
    EXPECT_EQ(rows, 400000u);
  }
}

// grpc.health.v1 messages by hand (no generated stubs for them here):
// HealthCheckRequest{service} is field 1, a string; HealthCheckResponse{status}
// is field 1, a varint (1 SERVING, 2 NOT_SERVING).
grpc::ByteBuffer HealthRequest(const std::string& service) {
  std::string bytes;
  if (!service.empty())
    bytes =
        std::string("\x0a", 1) + static_cast<char>(service.size()) + service;
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string Bytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (auto& s : slices)
    bytes += std::string(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

const std::string kServing("\x08\x01", 2), kNotServing("\x08\x02", 2);

TEST_F(ServicesTest, HealthIsServingForTheServerAndEachService) {
  auto channel = coordinator_->InProcessChannel();
  grpc::GenericStub stub(channel);
  for (const char* service : kHealthServices) {
    SCOPED_TRACE(std::string("service '") + service + "'");
    grpc::ClientContext ctx;
    grpc::ByteBuffer request = HealthRequest(service), response;
    grpc::Status status;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                   &request, &response, [&](grpc::Status s) {
                     std::lock_guard<std::mutex> lock(mu);
                     status = s;
                     done = true;
                     cv.notify_all();
                   });
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(
        cv.wait_for(lock, std::chrono::seconds(10), [&] { return done; }));
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(Bytes(response), kServing);
  }
}

TEST_F(ServicesTest, AHealthWatchSeesNotServingWhenShutdownBegins) {
  auto channel = coordinator_->InProcessChannel();
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  auto call = stub.PrepareCall(&ctx, "/grpc.health.v1.Health/Watch", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto next = [&](void* expected) {
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(tag, expected);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(next(reinterpret_cast<void*>(1)));
  call->Write(HealthRequest("megabatch.v1.SweepService"),
              reinterpret_cast<void*>(2));
  ASSERT_TRUE(next(reinterpret_cast<void*>(2)));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(next(reinterpret_cast<void*>(3)));
  grpc::ByteBuffer message;
  call->Read(&message, reinterpret_cast<void*>(4));
  ASSERT_TRUE(next(reinterpret_cast<void*>(4)));
  EXPECT_EQ(Bytes(message), kServing);
  // Shutdown: the watch hears NOT_SERVING before its stream ends.
  std::thread stop([&] { coordinator_->Shutdown(); });
  call->Read(&message, reinterpret_cast<void*>(5));
  const bool got = next(reinterpret_cast<void*>(5));
  stop.join();
  ASSERT_TRUE(got) << "the stream ended without a NOT_SERVING message";
  EXPECT_EQ(Bytes(message), kNotServing);
  ctx.TryCancel();
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(6));
  next(reinterpret_cast<void*>(6));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

// Periodic backups: written into the directory while the coordinator
// serves, counted on /metrics; workers are told to keep checkpoints as long.
TEST_F(ServicesTest, PeriodicBackupsAreWrittenWhileServing) {
  coordinator_.reset();
  CoordinatorOptions options;
  options.metrics_listen = "127.0.0.1:0";
  options.backup_dir = dir_.File("backups");
  options.backup_every = std::chrono::seconds(1);
  options.backup_keep = 2;
  options.scheduler.checkpoint_history = std::chrono::minutes(5);
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(options));
  grpc::ClientContext ctx;
  v1::RegisterWorkerRequest req;
  req.set_name("w");
  req.set_slots(1);
  v1::RegisterWorkerResponse resp;
  ASSERT_TRUE(workers_->RegisterWorker(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.checkpoint_history_ms(), 300000);
  auto backups = [&] {
    int n = 0;
    std::error_code ec;
    for (const auto& e :
         std::filesystem::directory_iterator(options.backup_dir, ec)) {
      n += e.path().extension() == ".db";
    }
    return n;
  };
  ASSERT_TRUE(testing::WaitUntil([&] { return backups() >= 2; },
                                 std::chrono::seconds(30)));
  // At most backup_keep are kept.
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        return testing::HttpGet(coordinator_->metrics_port(), "/metrics")
                   .body.find("megabatch_backups_total{result=\"ok\"} 3") !=
               std::string::npos;
      },
      std::chrono::seconds(30)));
  EXPECT_EQ(backups(), 2);
  // Each one is a database that opens and holds the worker.
  for (const auto& e :
       std::filesystem::directory_iterator(options.backup_dir)) {
    auto db = store::Db::OpenReadOnly(e.path().string());
    ASSERT_OK(db);
    auto q = (*db)->Prepare("SELECT count(*) FROM workers");
    ASSERT_TRUE(q.ok() && *q->Step());
    EXPECT_EQ(q->Int(0), 1);
  }
}

}  // namespace
}  // namespace megabatch
