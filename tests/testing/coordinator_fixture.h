// One in-process coordinator for tests of the gRPC services: started on a
// free loopback port with its database in a temp dir, and the calls most
// tests make (submit, register a worker, lease) over any channel. Used by
// services_test, hostile_input_test and auth_test.
#ifndef MEGABATCH_TESTS_TESTING_COORDINATOR_FIXTURE_H_
#define MEGABATCH_TESTS_TESTING_COORDINATOR_FIXTURE_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "megabatch/v1/megabatch.grpc.pb.h"
#include "server/coordinator.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::testing {

class CoordinatorFixture : public ::testing::Test {
 protected:
  // Starts the coordinator (listen and db_path default to a free loopback
  // port and coordinator.db in the temp dir); ASSERTs it started. With
  // `in_process`, sweeps_ and workers_ use its in-process channel, else one
  // over TCP.
  void StartCoordinator(CoordinatorOptions options = {},
                        bool in_process = true) {
    if (options.listen.empty() ||
        options.listen == CoordinatorOptions().listen) {
      options.listen = "127.0.0.1:0";
    }
    if (options.db_path.empty() ||
        options.db_path == CoordinatorOptions().db_path) {
      options.db_path = dir_.File("coordinator.db");
    }
    options_ = options;
    auto c = Coordinator::Start(options);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    coordinator_ = std::move(*c);
    if (!options.tls_cert.empty()) return;  // the test makes its own channels
    channel_ = in_process ? coordinator_->InProcessChannel()
                          : grpc::CreateChannel(
                                Address(), grpc::InsecureChannelCredentials());
    sweeps_ = v1::SweepService::NewStub(channel_);
    workers_ = v1::WorkerService::NewStub(channel_);
  }

  std::string Address() const {
    return "127.0.0.1:" + std::to_string(coordinator_->port());
  }

  static grpc::Status Submit(v1::SweepService::StubInterface* sweeps,
                             const std::string& spec,
                             v1::SubmitSweepResponse* resp,
                             const std::string& request_id = "") {
    grpc::ClientContext ctx;
    v1::SubmitSweepRequest req;
    req.set_spec(spec);
    req.set_request_id(request_id);
    return sweeps->SubmitSweep(&ctx, req, resp);
  }
  static grpc::Status Register(v1::WorkerService::StubInterface* workers,
                               int64_t* id, int32_t slots = 1,
                               const std::string& name = "w") {
    grpc::ClientContext ctx;
    v1::RegisterWorkerRequest req;
    req.set_name(name);
    req.set_slots(slots);
    v1::RegisterWorkerResponse resp;
    grpc::Status s = workers->RegisterWorker(&ctx, req, &resp);
    if (id != nullptr) *id = resp.worker_id();
    return s;
  }
  static grpc::Status Lease(v1::WorkerService::StubInterface* workers,
                            int64_t worker_id, v1::LeaseTrialResponse* resp,
                            int32_t wait_ms = 0) {
    grpc::ClientContext ctx;
    v1::LeaseTrialRequest req;
    req.set_worker_id(worker_id);
    req.set_wait_ms(wait_ms);
    return workers->LeaseTrial(&ctx, req, resp);
  }

  TempDir dir_;
  CoordinatorOptions options_;
  std::unique_ptr<Coordinator> coordinator_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::SweepService::Stub> sweeps_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
};

}  // namespace megabatch::testing

#endif  // MEGABATCH_TESTS_TESTING_COORDINATOR_FIXTURE_H_
