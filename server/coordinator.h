// Coordinator: the store, the scheduler and the gRPC server, wired together.
// main.cc parses flags into CoordinatorOptions; tests start one in-process.
#ifndef MEGABATCH_SERVER_COORDINATOR_H_
#define MEGABATCH_SERVER_COORDINATOR_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/datasets.h"
#include "common/mutex.h"
#include "common/status.h"
#include "server/metrics/metrics.h"
#include "server/scheduler/scheduler.h"
#include "server/service/services.h"
#include "server/store/sweep_store.h"

namespace megabatch {

struct CoordinatorOptions {
  std::string listen = "127.0.0.1:50051";  // port 0 picks a free port
  std::string db_path = "megabatch.db";
  // Where /metrics is served ("host:port", port 0 picks one); empty: nowhere.
  std::string metrics_listen;
  // A file with one "user:password" line: /metrics then requires HTTP basic
  // auth with it. Empty: /metrics is open.
  std::string metrics_auth_file;
  scheduler::SchedulerOptions scheduler;
  // Metric points accepted per second from one worker (a token bucket of
  // one second); more is RESOURCE_EXHAUSTED and the worker retries. 0: no
  // limit.
  double max_points_per_second = 1000000;
  // The database file's size cap in bytes (0: none): past it every write is
  // RESOURCE_EXHAUSTED, stores nothing, and workers keep their points and
  // retry, as on a full disk.
  int64_t max_db_bytes = 0;
  // Threads serving calls (gRPC's synchronous pool; a long-polling
  // LeaseTrial holds none): past them a call is RESOURCE_EXHAUSTED, which
  // workers retry. Watch and export streams are capped well below it.
  int max_rpc_threads = 256;

  // Authentication: non-empty turns it on (every RPC needs a token). The file
  // holds the admin token: created (mode 0600) with a new one when absent;
  // an existing file's token is registered as admin if the database does
  // not know it yet.
  std::string auth_file;
  // The coordinator refuses a listen address that is not loopback without
  // auth, or with auth but without TLS (tokens in plaintext), unless this is
  // set.
  bool insecure = false;
  // TLS: the server's certificate chain and key (PEM files), both or
  // neither. With tls_client_ca, client certificates are requested and
  // verified against it; a worker that presents a valid one needs no token
  // (it is the worker named by the certificate's common name).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  // With tls_client_ca: refuse a connection without a valid client
  // certificate; which certificates are workers (a pattern of common names;
  // empty: none, tokens say who calls); a PEM CRL of revoked ones.
  bool tls_require_client_cert = false;
  std::string tls_worker_cn;
  std::string tls_crl;
  // Periodic online backups into backup_dir every backup_every (0: none),
  // keeping the newest backup_keep (store/backup.h).
  std::string backup_dir;
  std::chrono::seconds backup_every{0};
  int backup_keep = 24;
  // What each user (not admin) may ask for: the highest sweep priority, and
  // the most queued and running trials over all their sweeps (0: no limit).
  int32_t max_user_priority = 100;
  int64_t max_pending_trials_per_owner = 50000;
  // Running trials (slots) over all of one owner's sweeps, admins' too; 0:
  // no quota. Past it the owner's queued trials wait while others lease.
  int64_t max_running_trials_per_owner = 0;
  // The largest model anyone may submit, in parameters (about 16 bytes of
  // a trainer's memory each); 0: no limit.
  int64_t max_model_parameters = int64_t{1} << 30;
  // The directories a spec's dataset.path may name (the coordinator looks
  // at nothing else); empty: anywhere.
  std::vector<std::string> data_roots = DefaultDataRoots();
  // Where uploaded TorchScript modules are kept (store/model_store.h);
  // empty: beside the database, in "<db_path>-models" (a temp directory for
  // an in-memory database). Uploads past model_max_bytes are refused.
  std::string model_dir;
  int64_t model_max_bytes = int64_t{512} << 20;
};

// True for loopback listen addresses (127.0.0.0/8, ::1, localhost) and
// unix sockets.
bool IsLoopbackAddress(const std::string& listen);

// The services whose health (grpc.health.v1) the coordinator reports, by
// their full names; "" is the whole server. All SERVING while it runs, all
// NOT_SERVING as soon as Shutdown() begins, before in-flight calls drain.
inline constexpr const char* kHealthServices[] = {
    "", "megabatch.v1.SweepService", "megabatch.v1.WorkerService"};

// Thread-safe.
class Coordinator {
 public:
  // Opens the database, recovers its state and starts serving. Errors name
  // the database file or the listen address.
  static Result<std::unique_ptr<Coordinator>> Start(
      const CoordinatorOptions& options);
  ~Coordinator();  // shuts down

  // The port actually bound (useful with port 0).
  int port() const { return port_; }
  // The port /metrics is served on; 0 when not serving.
  int metrics_port() const { return metrics_->port(); }
  // A channel to this server that bypasses the network.
  std::shared_ptr<grpc::Channel> InProcessChannel();
  store::SweepStore* store() { return store_.get(); }
  scheduler::Scheduler* scheduler() { return scheduler_.get(); }
  // The WorkerService handlers, for harnesses that call them without gRPC
  // (the metrics fuzzer).
  service::WorkerServiceImpl* worker_service() { return worker_service_.get(); }

  // Stops accepting RPCs and finishes those in flight (bounded).
  void Shutdown();
  // Blocks until Shutdown() is called from another thread.
  void Wait();

 private:
  Coordinator() = default;

  std::unique_ptr<store::SweepStore> store_;
  std::unique_ptr<store::ModelStore> models_;
  std::string temp_model_dir_;  // an in-memory database's model store
  std::unique_ptr<store::ReadOnlyDb> results_;
  std::unique_ptr<auth::Authenticator> auth_;
  std::unique_ptr<metrics::CoordinatorMetrics> metrics_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  std::unique_ptr<service::SweepServiceImpl> sweep_service_;
  std::unique_ptr<service::WorkerServiceImpl> worker_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;

  // The periodic backups (options.backup_every).
  void BackupLoop(std::string db_path, std::string dir,
                  std::chrono::seconds every, int keep);
  Mutex backup_mu_;
  CondVar backup_cv_{&backup_mu_};
  bool stopping_ GUARDED_BY(backup_mu_) = false;
  std::thread backup_thread_;
};

}  // namespace megabatch

#endif  // MEGABATCH_SERVER_COORDINATOR_H_
