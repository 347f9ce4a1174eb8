// Tokens, roles and TLS on a real coordinator over loopback TCP, with a CA
// and certificates made by the openssl command in the test.
#include "server/auth/auth.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "common/channel.h"
#include "megabatch/v1/megabatch.grpc.pb.h"
#include "server/auth/token_store.h"
#include "server/coordinator.h"
#include "server/store/read_only.h"
#include "tests/testing/coordinator_fixture.h"
#include "tests/testing/http.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tls.h"

namespace megabatch {
namespace {

using ::testing::HasSubstr;

constexpr const char* kSpec =
    "name: secured\noptimizers: [{name: sgd}]\nbatch_sizes: [128]\nbase: {lr: "
    "0.1}\n";

class AuthTest : public testing::CoordinatorFixture {
 protected:
  void SetUp() override {
    testing::MakeCertificates(dir_.path());
    if (HasFatalFailure()) return;
    CoordinatorOptions options;
    options.auth_file = dir_.File("admin.token");
    options.tls_cert = dir_.File("server.pem");
    options.tls_key = dir_.File("server.key");
    options.tls_client_ca = dir_.File("ca.pem");
    options.tls_worker_cn = "gpu-node-[0-9]+";
    options.tls_crl = dir_.File("crl.pem");
    options.metrics_listen = "127.0.0.1:0";
    std::ofstream(dir_.File("metrics.auth")) << "prometheus:s3cret\n";
    options.metrics_auth_file = dir_.File("metrics.auth");
    StartCoordinator(options);
    if (HasFatalFailure()) return;
    auto token_store = auth::TokenStore::Open(options_.db_path);
    ASSERT_OK(token_store);
    token_store_ = std::move(*token_store);
    address_ = "localhost:" + std::to_string(coordinator_->port());
    auto admin = LoadToken(options_.auth_file);
    ASSERT_OK(admin);
    tokens_["admin"] = *admin;
    tokens_["alice"] = NewToken("alice", "user");
    tokens_["bob"] = NewToken("bob", "user");
    tokens_["worker"] = NewToken("rack-1", "worker");
  }

  std::string NewToken(const std::string& name, const std::string& role) {
    auto token = auth::NewToken();
    EXPECT_OK(token);
    auto id = token_store_->Create(name, role, auth::Sha256Hex(*token), 1.0);
    EXPECT_OK(id);
    ids_[name] = *id;
    return *token;
  }

  std::shared_ptr<grpc::Channel> Channel(const std::string& token,
                                         const std::string& cert = "") {
    ChannelOptions o;
    o.token = token;
    o.tls_ca_file = dir_.File("ca.pem");
    if (!cert.empty()) {
      o.tls_cert_file = dir_.File(cert + ".pem");
      o.tls_key_file = dir_.File(cert + ".key");
    }
    auto channel = MakeChannel(address_, o);
    EXPECT_OK(channel);
    return *channel;
  }

  static grpc::Status Submit(const std::shared_ptr<grpc::Channel>& ch,
                             v1::SubmitSweepResponse* resp = nullptr,
                             const std::string& request_id = "",
                             const std::string& spec = kSpec) {
    v1::SubmitSweepResponse ignored;
    return CoordinatorFixture::Submit(v1::SweepService::NewStub(ch).get(), spec,
                                      resp ? resp : &ignored, request_id);
  }
  static grpc::Status List(const std::shared_ptr<grpc::Channel>& ch) {
    grpc::ClientContext ctx;
    v1::ListSweepsResponse resp;
    return v1::SweepService::NewStub(ch)->ListSweeps(&ctx, {}, &resp);
  }
  static grpc::Status Query(const std::shared_ptr<grpc::Channel>& ch,
                            const std::string& sql) {
    grpc::ClientContext ctx;
    v1::QueryRequest req;
    req.set_sql(sql);
    v1::QueryResponse resp;
    return v1::SweepService::NewStub(ch)->Query(&ctx, req, &resp);
  }
  static grpc::Status Cancel(const std::shared_ptr<grpc::Channel>& ch,
                             int64_t sweep) {
    grpc::ClientContext ctx;
    v1::CancelSweepRequest req;
    req.set_sweep_id(sweep);
    v1::Sweep resp;
    return v1::SweepService::NewStub(ch)->CancelSweep(&ctx, req, &resp);
  }
  static grpc::Status Register(const std::shared_ptr<grpc::Channel>& ch,
                               int64_t* id = nullptr) {
    return CoordinatorFixture::Register(v1::WorkerService::NewStub(ch).get(),
                                        id);
  }
  static grpc::Status Lease(const std::shared_ptr<grpc::Channel>& ch,
                            int64_t worker) {
    v1::LeaseTrialResponse resp;
    return CoordinatorFixture::Lease(v1::WorkerService::NewStub(ch).get(),
                                     worker, &resp);
  }

  int SweepCount() {
    auto sweeps = coordinator_->store()->ListSweeps();
    return sweeps.ok() ? static_cast<int>(sweeps->size()) : -1;
  }

  std::unique_ptr<auth::TokenStore> token_store_;
  std::string address_;
  std::map<std::string, std::string> tokens_;
  std::map<std::string, int64_t> ids_;
};

using Code = grpc::StatusCode;

TEST_F(AuthTest, RequestIdsArePerOwnerAndARepeatMustCarryTheSameSpec) {
  auto alice = Channel(tokens_["alice"]), bob = Channel(tokens_["bob"]);
  v1::SubmitSweepResponse first, again, bobs;
  ASSERT_TRUE(Submit(alice, &first, "nightly").ok());
  EXPECT_FALSE(first.repeated());
  // The same owner, id and spec: the same sweep, marked as a repeat.
  ASSERT_TRUE(Submit(alice, &again, "nightly").ok());
  EXPECT_EQ(again.sweep_id(), first.sweep_id());
  EXPECT_TRUE(again.repeated());
  EXPECT_EQ(again.trials(), first.trials());
  // Another owner with the same id gets a sweep of their own, never alice's.
  ASSERT_TRUE(Submit(bob, &bobs, "nightly").ok());
  EXPECT_NE(bobs.sweep_id(), first.sweep_id());
  EXPECT_FALSE(bobs.repeated());
  EXPECT_EQ(SweepCount(), 2);
  // ... and can cancel it (it is theirs).
  EXPECT_TRUE(Cancel(bob, bobs.sweep_id()).ok());
  // The same owner and id with another spec: ALREADY_EXISTS naming the sweep.
  std::string other = std::string(kSpec) + "seeds: [3]\n";
  grpc::Status clash = Submit(alice, nullptr, "nightly", other);
  EXPECT_EQ(clash.error_code(), Code::ALREADY_EXISTS);
  EXPECT_THAT(clash.error_message(),
              HasSubstr("request_id 'nightly' was used for sweep " +
                        std::to_string(first.sweep_id())));
  EXPECT_EQ(SweepCount(), 2);
}

TEST_F(AuthTest, EachRoleCanDoExactlyWhatItShould) {
  struct Expect {
    std::string who;
    Code sweeps;   // SubmitSweep, ListSweeps, Query
    Code workers;  // RegisterWorker
  };
  const Expect table[] = {
      {"admin", Code::OK, Code::PERMISSION_DENIED},
      {"alice", Code::OK, Code::PERMISSION_DENIED},
      {"worker", Code::PERMISSION_DENIED, Code::OK},
      {"", Code::UNAUTHENTICATED, Code::UNAUTHENTICATED},
      {"mbt_0123456789", Code::UNAUTHENTICATED, Code::UNAUTHENTICATED},
  };
  for (const Expect& e : table) {
    SCOPED_TRACE("caller '" + e.who + "'");
    const std::string token = tokens_.count(e.who) ? tokens_[e.who] : e.who;
    auto ch = Channel(token);
    const int before = SweepCount();
    grpc::Status submit = Submit(ch);
    EXPECT_EQ(submit.error_code(), e.sweeps) << submit.error_message();
    EXPECT_EQ(SweepCount(), before + (e.sweeps == Code::OK ? 1 : 0));
    EXPECT_EQ(List(ch).error_code(), e.sweeps);
    EXPECT_EQ(Query(ch, "SELECT count(*) FROM sweeps").error_code(), e.sweeps);
    int64_t worker = 0;
    EXPECT_EQ(Register(ch, &worker).error_code(), e.workers);
    if (e.workers == Code::OK) {
      EXPECT_EQ(Lease(ch, worker).error_code(), Code::OK);
    }
  }
  grpc::Status denied = Submit(Channel(tokens_["worker"]));
  EXPECT_THAT(denied.error_message(), HasSubstr("'rack-1' has role worker"));
  EXPECT_THAT(Register(Channel("")).error_message(),
              HasSubstr("authorization"));
}

TEST_F(AuthTest, AUserCancelsOnlyTheirOwnSweepsAnAdminAny) {
  v1::SubmitSweepResponse first, second;
  ASSERT_TRUE(Submit(Channel(tokens_["alice"]), &first).ok());
  ASSERT_TRUE(Submit(Channel(tokens_["alice"]), &second).ok());
  EXPECT_EQ(coordinator_->store()->GetSweep(first.sweep_id())->owner, "alice");
  grpc::Status bob = Cancel(Channel(tokens_["bob"]), first.sweep_id());
  EXPECT_EQ(bob.error_code(), Code::PERMISSION_DENIED);
  EXPECT_THAT(bob.error_message(), HasSubstr("belongs to 'alice'"));
  EXPECT_EQ(coordinator_->store()->GetSweep(first.sweep_id())->state,
            store::SweepState::kQueued);
  EXPECT_TRUE(Cancel(Channel(tokens_["alice"]), first.sweep_id()).ok());
  EXPECT_TRUE(Cancel(Channel(tokens_["admin"]), second.sweep_id()).ok());
  EXPECT_EQ(coordinator_->store()->GetSweep(second.sweep_id())->state,
            store::SweepState::kCancelled);
}

TEST_F(AuthTest, ARevokedTokenStopsWorkingAtOnce) {
  auto alice = Channel(tokens_["alice"]);
  ASSERT_TRUE(List(alice).ok());
  ASSERT_TRUE(token_store_->Revoke(ids_["alice"], 2.0).ok());
  grpc::Status after = List(alice);
  EXPECT_EQ(after.error_code(), Code::UNAUTHENTICATED);
  EXPECT_THAT(after.error_message(), HasSubstr("revoked"));
  EXPECT_TRUE(List(Channel(tokens_["bob"])).ok());
}

TEST_F(AuthTest, ARevokedTokenEndsAnOpenWatchStream) {
  auto alice = Channel(tokens_["alice"]);
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(Submit(alice, &submitted).ok());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::WatchSweepRequest req;
  req.set_sweep_id(submitted.sweep_id());
  auto stub = v1::SweepService::NewStub(alice);
  auto reader = stub->WatchSweep(&ctx, req);
  v1::WatchSweepResponse snapshot;
  ASSERT_TRUE(reader->Read(&snapshot));  // the stream is open
  ASSERT_TRUE(token_store_->Revoke(ids_["alice"], 2.0).ok());
  const auto revoked = std::chrono::steady_clock::now();
  while (reader->Read(&snapshot)) {
  }
  grpc::Status end = reader->Finish();
  EXPECT_EQ(end.error_code(), Code::UNAUTHENTICATED) << end.error_message();
  // At the next snapshot (at least one a second), not at the deadline.
  EXPECT_LT(std::chrono::steady_clock::now() - revoked,
            std::chrono::seconds(5));
}

TEST_F(AuthTest, PlaintextClientsCannotTalkToTheTlsCoordinator) {
  auto plain =
      grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ListSweepsResponse resp;
  grpc::Status s =
      v1::SweepService::NewStub(plain)->ListSweeps(&ctx, {}, &resp);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.error_code(), Code::UNAUTHENTICATED)
      << "must fail before any RPC runs";
  // Nor can a client that trusts another CA.
  ChannelOptions rogue;
  rogue.tls_ca_file = dir_.File("rogue.pem");
  rogue.token = tokens_["alice"];
  grpc::ClientContext ctx2;
  ctx2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  EXPECT_EQ(v1::SweepService::NewStub(*MakeChannel(address_, rogue))
                ->ListSweeps(&ctx2, {}, &resp)
                .error_code(),
            Code::UNAVAILABLE);
}

TEST_F(AuthTest, AWorkerWithAValidClientCertificateNeedsNoToken) {
  auto node = Channel("", "worker");
  int64_t worker = 0;
  ASSERT_TRUE(Register(node, &worker).ok());
  EXPECT_TRUE(Lease(node, worker).ok());
  // The certificate makes it a worker, nothing more.
  EXPECT_EQ(List(node).error_code(), Code::UNAUTHENTICATED);
  // A certificate from an unknown CA does not get through the handshake.
  EXPECT_FALSE(Register(Channel("", "stranger")).ok());
}

// Worker B's token reported metrics on worker A's trial, finished it as
// COMPLETED, and kept A alive past its lease; lease ids were small integers.
TEST_F(AuthTest, AWorkerTokenActsOnlyForTheWorkersItRegistered) {
  tokens_["other-worker"] = NewToken("rack-2", "worker");
  auto a = v1::WorkerService::NewStub(Channel(tokens_["worker"]));
  auto b = v1::WorkerService::NewStub(Channel(tokens_["other-worker"]));
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(Submit(Channel(tokens_["alice"]), &submitted).ok());
  int64_t worker_a = 0, worker_b = 0;
  ASSERT_TRUE(CoordinatorFixture::Register(a.get(), &worker_a).ok());
  ASSERT_TRUE(CoordinatorFixture::Register(b.get(), &worker_b).ok());
  v1::LeaseTrialResponse leased;
  ASSERT_TRUE(CoordinatorFixture::Lease(a.get(), worker_a, &leased).ok());
  ASSERT_TRUE(leased.has_lease());
  const v1::TrialLease lease = leased.lease();
  // 62 random bits: not 1, 2, 3...
  EXPECT_GT(lease.lease_id(), int64_t{1} << 20);

  auto report = [&](v1::WorkerService::Stub* stub, int64_t worker) {
    grpc::ClientContext ctx;
    v1::ReportMetricsRequest req;
    req.set_worker_id(worker);
    *req.mutable_lease() = lease;
    auto* p = req.add_points();
    p->set_name("train_loss");
    p->set_step(1);
    p->set_value(0.5);
    v1::ReportMetricsResponse resp;
    return stub->ReportMetrics(&ctx, req, &resp);
  };
  auto finish = [&](v1::WorkerService::Stub* stub, int64_t worker) {
    grpc::ClientContext ctx;
    v1::FinishTrialRequest req;
    req.set_worker_id(worker);
    *req.mutable_lease() = lease;
    req.set_outcome(v1::TRIAL_STATE_COMPLETED);
    v1::FinishTrialResponse resp;
    return stub->FinishTrial(&ctx, req, &resp);
  };
  auto heartbeat = [&](v1::WorkerService::Stub* stub, int64_t worker) {
    grpc::ClientContext ctx;
    v1::HeartbeatRequest req;
    req.set_worker_id(worker);
    *req.add_running() = lease;
    v1::HeartbeatResponse resp;
    return stub->Heartbeat(&ctx, req, &resp);
  };
  v1::LeaseTrialResponse ignored;
  for (const grpc::Status& s :
       {report(b.get(), worker_a), finish(b.get(), worker_a),
        heartbeat(b.get(), worker_a),
        CoordinatorFixture::Lease(b.get(), worker_a, &ignored)}) {
    EXPECT_EQ(s.error_code(), Code::PERMISSION_DENIED) << s.error_message();
    EXPECT_THAT(s.error_message(),
                HasSubstr("registered by 'rack-1'; 'rack-2' may not act"));
  }
  // Under its own id, B holds no such lease.
  EXPECT_EQ(report(b.get(), worker_b).error_code(), Code::ABORTED);
  EXPECT_EQ(finish(b.get(), worker_b).error_code(), Code::ABORTED);
  auto trials = coordinator_->store()->ListTrials(submitted.sweep_id());
  ASSERT_OK(trials);
  EXPECT_EQ((*trials)[0].state, store::TrialState::kRunning);
  auto points = store::ReadOnlyDb(options_.db_path)
                    .Query("SELECT count(*) FROM metrics", {});
  ASSERT_OK(points);
  EXPECT_EQ(points->rows[0][0].integer, 0);
  // A itself still can.
  EXPECT_TRUE(heartbeat(a.get(), worker_a).ok());
  EXPECT_TRUE(report(a.get(), worker_a).ok());
  EXPECT_TRUE(finish(a.get(), worker_a).ok());
}

// Nothing recorded who submitted, cancelled, registered or queried.
TEST_F(AuthTest, TheAuditTableRecordsWhoDidWhatForAdminsOnly) {
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(Submit(Channel(tokens_["alice"]), &submitted).ok());
  EXPECT_EQ(Cancel(Channel(tokens_["bob"]), submitted.sweep_id()).error_code(),
            Code::PERMISSION_DENIED);
  ASSERT_TRUE(Cancel(Channel(tokens_["alice"]), submitted.sweep_id()).ok());
  ASSERT_TRUE(Query(Channel(tokens_["bob"]), "SELECT 42").ok());
  int64_t worker = 0;
  ASSERT_TRUE(Register(Channel(tokens_["worker"]), &worker).ok());
  tokens_["other-worker"] = NewToken("rack-2", "worker");
  EXPECT_EQ(Lease(Channel(tokens_["other-worker"]), worker).error_code(),
            Code::PERMISSION_DENIED);

  EXPECT_EQ(
      Query(Channel(tokens_["alice"]), "SELECT * FROM audit").error_code(),
      Code::PERMISSION_DENIED);
  grpc::ClientContext ctx;
  v1::QueryRequest req;
  req.set_sql(
      "SELECT caller || ' ' || role || ' ' || action || ' ' || object || ' ' "
      "|| status FROM audit WHERE action != 'Query' OR caller = 'bob' "
      "ORDER BY id");
  v1::QueryResponse resp;
  ASSERT_TRUE(v1::SweepService::NewStub(Channel(tokens_["admin"]))
                  ->Query(&ctx, req, &resp)
                  .ok());
  std::vector<std::string> lines;
  for (const auto& row : resp.rows()) lines.push_back(row.values(0).text());
  const std::string sweep = "sweep " + std::to_string(submitted.sweep_id());
  EXPECT_THAT(lines, ::testing::ElementsAre(
                         "alice user SubmitSweep " + sweep + " OK",
                         "bob user CancelSweep " + sweep + " PERMISSION_DENIED",
                         "alice user CancelSweep " + sweep + " OK",
                         "bob user Query  OK",
                         "rack-1 worker RegisterWorker worker " +
                             std::to_string(worker) + " OK",
                         "rack-2 worker ActAsWorker worker " +
                             std::to_string(worker) + " PERMISSION_DENIED"));
}

// Any user could set priority 1000000 or queue unlimited 10,000-trial
// sweeps.
TEST_F(AuthTest, UsersAreHeldToTheirPriorityAndPendingTrialQuotas) {
  coordinator_.reset();
  options_.max_pending_trials_per_owner = 2;
  auto again = Coordinator::Start(options_);
  ASSERT_OK(again);
  coordinator_ = std::move(*again);
  address_ = "localhost:" + std::to_string(coordinator_->port());

  const std::string urgent = std::string(kSpec) + "priority: 1000000\n";
  grpc::Status s = Submit(Channel(tokens_["alice"]), nullptr, "", urgent);
  EXPECT_EQ(s.error_code(), Code::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("priority: 1000000 is above 100"));
  EXPECT_TRUE(Submit(Channel(tokens_["admin"]), nullptr, "", urgent).ok());

  // kSpec is one trial: two fit, the third does not; another user's do.
  EXPECT_TRUE(Submit(Channel(tokens_["alice"])).ok());
  v1::SubmitSweepResponse second;
  EXPECT_TRUE(Submit(Channel(tokens_["alice"]), &second).ok());
  s = Submit(Channel(tokens_["alice"]));
  EXPECT_EQ(s.error_code(), Code::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(),
              HasSubstr("'alice' has 2 trials queued or running"));
  EXPECT_TRUE(Submit(Channel(tokens_["bob"])).ok());
  // Cancelling frees the quota.
  ASSERT_TRUE(Cancel(Channel(tokens_["alice"]), second.sweep_id()).ok());
  EXPECT_TRUE(Submit(Channel(tokens_["alice"])).ok());
}

// Any certificate the client CA signed was a worker (a user's laptop
// certificate registered as one), and none could be revoked.
TEST_F(AuthTest, OnlyWorkerCertificatesAreWorkersAndRevokedOnesAreRefused) {
  auto laptop = Channel("", "laptop");
  grpc::Status s = Register(laptop);
  EXPECT_EQ(s.error_code(), Code::UNAUTHENTICATED) << s.error_message();
  // With a user's token the laptop is that user, nothing more.
  EXPECT_TRUE(List(Channel(tokens_["alice"], "laptop")).ok());
  EXPECT_EQ(Register(Channel(tokens_["alice"], "laptop")).error_code(),
            Code::PERMISSION_DENIED);

  auto node = Channel("", "worker");
  int64_t worker = 0;
  ASSERT_TRUE(Register(node, &worker).ok());
  testing::RevokeCertificate(dir_.path(), "worker");
  // The new list is read at the next call: no restart, with or without a
  // token.
  s = Lease(Channel("", "worker"), worker);
  EXPECT_EQ(s.error_code(), Code::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("'gpu-node-7'"));
  EXPECT_THAT(s.error_message(), HasSubstr("is revoked"));
  EXPECT_EQ(Register(Channel(tokens_["worker"], "worker")).error_code(),
            Code::UNAUTHENTICATED);
  EXPECT_TRUE(Register(Channel(tokens_["worker"])).ok());
}

TEST(CertificateFlagsTest, ARequiredClientCertificateKeepsOthersOut) {
  testing::TempDir dir;
  testing::MakeCertificates(dir.path());
  if (HasFatalFailure()) return;
  CoordinatorOptions options;
  options.db_path = dir.File("certs.db");
  options.listen = "127.0.0.1:0";
  options.auth_file = dir.File("admin.token");
  options.tls_cert = dir.File("server.pem");
  options.tls_key = dir.File("server.key");
  options.tls_require_client_cert = true;
  auto refused = Coordinator::Start(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("need --tls-client-ca"));
  options.tls_client_ca = dir.File("ca.pem");
  options.tls_worker_cn = "(unclosed";
  refused = Coordinator::Start(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("--tls-worker-cn"));
  options.tls_worker_cn = "gpu-node-[0-9]+";
  options.tls_crl = dir.File("ca.pem");  // not a CRL
  refused = Coordinator::Start(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("is not a PEM CRL"));
  options.tls_crl = "";
  auto started = Coordinator::Start(options);
  ASSERT_OK(started);
  const std::string address = "localhost:" + std::to_string((*started)->port());
  auto call = [&](const std::string& cert) {
    ChannelOptions o;
    o.tls_ca_file = dir.File("ca.pem");
    if (!cert.empty()) {
      o.tls_cert_file = dir.File(cert + ".pem");
      o.tls_key_file = dir.File(cert + ".key");
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
    v1::RegisterWorkerRequest req;
    req.set_name("w");
    req.set_slots(1);
    v1::RegisterWorkerResponse resp;
    return v1::WorkerService::NewStub(*MakeChannel(address, o))
        ->RegisterWorker(&ctx, req, &resp);
  };
  // No certificate: the handshake fails before any RPC.
  EXPECT_EQ(call("").error_code(), Code::UNAVAILABLE);
  EXPECT_TRUE(call("worker").ok());
}

TEST_F(AuthTest, TheAdminTokenFileIsOwnerOnlyAndSurvivesARestart) {
  struct stat st {};
  ASSERT_EQ(stat(options_.auth_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string admin = tokens_["admin"];
  coordinator_.reset();
  auto again = Coordinator::Start(options_);
  ASSERT_OK(again);
  coordinator_ = std::move(*again);
  address_ = "localhost:" + std::to_string(coordinator_->port());
  EXPECT_EQ(*LoadToken(options_.auth_file), admin);
  EXPECT_TRUE(List(Channel(admin)).ok());
  auto tokens = token_store_->List();
  ASSERT_OK(tokens);
  int admins = 0;
  for (const auto& t : *tokens) admins += t.role == "admin";
  EXPECT_EQ(admins, 1);
}

TEST_F(AuthTest, TokenHashesCannotBeReadThroughQuery) {
  grpc::Status s =
      Query(Channel(tokens_["admin"]), "SELECT sha256 FROM tokens");
  EXPECT_EQ(s.error_code(), Code::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("tokens table"));
  EXPECT_EQ(Query(Channel(tokens_["admin"]),
                  "WITH t AS (SELECT * FROM tokens) SELECT count(*) FROM t")
                .error_code(),
            Code::PERMISSION_DENIED);
}

TEST_F(AuthTest, MetricsRequireBasicAuthWhenConfigured) {
  const int port = coordinator_->metrics_port();
  EXPECT_EQ(testing::HttpGet(port, "/metrics").status, 401);
  // "prometheus:wrong" and "prometheus:s3cret" in base64.
  EXPECT_EQ(
      testing::HttpGet(port, "/metrics",
                       "Authorization: Basic cHJvbWV0aGV1czp3cm9uZw==\r\n")
          .status,
      401);
  auto ok = testing::HttpGet(
      port, "/metrics", "Authorization: Basic cHJvbWV0aGV1czpzM2NyZXQ=\r\n");
  EXPECT_EQ(ok.status, 200);
  EXPECT_THAT(ok.body, HasSubstr("megabatch_"));
}

TEST(SafeDefaultsTest, WithoutAuthOnlyLoopbackUnlessInsecure) {
  testing::TempDir dir;
  CoordinatorOptions options;
  options.db_path = dir.File("open.db");
  options.listen = "0.0.0.0:0";
  auto refused = Coordinator::Start(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("--insecure"));
  options.insecure = true;
  EXPECT_TRUE(Coordinator::Start(options).ok());
  EXPECT_TRUE(IsLoopbackAddress("127.0.0.1:50051"));
  EXPECT_TRUE(IsLoopbackAddress("localhost:1"));
  EXPECT_TRUE(IsLoopbackAddress("[::1]:50051"));
  EXPECT_TRUE(IsLoopbackAddress("unix:/tmp/mb.sock"));
  EXPECT_FALSE(IsLoopbackAddress("[::]:50051"));
  EXPECT_FALSE(IsLoopbackAddress("10.0.0.5:50051"));
  EXPECT_FALSE(IsLoopbackAddress("128.0.0.1:50051"));
}

// Tokens on a non-loopback address without TLS only logged an info line, and
// any text in --auth-file became the admin token.
TEST(SafeDefaultsTest, TokensNeedTlsOffLoopbackAndAWellFormedAdminToken) {
  testing::TempDir dir;
  CoordinatorOptions options;
  options.db_path = dir.File("tokens.db");
  options.listen = "0.0.0.0:0";
  options.auth_file = dir.File("admin.token");
  auto refused = Coordinator::Start(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("plaintext"));
  EXPECT_FALSE(std::filesystem::exists(options.auth_file));
  options.insecure = true;
  EXPECT_TRUE(Coordinator::Start(options).ok());

  options.listen = "127.0.0.1:0";
  for (const char* text : {"password\n", "mbt_1234\n",
                           "mbt_0123456789abcdef0123456789abcdef0123456789abcd"
                           "ef0123456789ABCDEF\n"}) {
    SCOPED_TRACE(text);
    std::ofstream(options.auth_file, std::ios::trunc) << text;
    auto bad = Coordinator::Start(options);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(bad.status().message(), HasSubstr("64 hex digits"));
  }
  EXPECT_TRUE(auth::IsWellFormedToken(*auth::NewToken()));
}

}  // namespace
}  // namespace megabatch
