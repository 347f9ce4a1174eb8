// The gRPC handlers: SweepService for users, WorkerService for workers.
// They validate and translate requests, call the scheduler or the store, and
// translate results; an exception from below becomes INTERNAL, never UNKNOWN.
#ifndef MEGABATCH_SERVER_SERVICE_SERVICES_H_
#define MEGABATCH_SERVER_SERVICE_SERVICES_H_

#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "megabatch/v1/megabatch.grpc.pb.h"
#include "server/auth/auth.h"
#include "server/metrics/metrics.h"
#include "server/scheduler/scheduler.h"
#include "server/store/read_only.h"
#include "server/store/sweep_store.h"

namespace megabatch::service {

// How many server streams (WatchSweep, ExportMetrics) each caller, and all
// callers together, may hold open at once: each holds a thread of the
// coordinator's bounded pool (--max-rpc-threads), so streams alone can never
// take every thread from the workers' calls. Thread-safe.
class StreamSlots {
 public:
  StreamSlots(int per_caller, int total)
      : per_caller_(per_caller), total_(total) {}
  // Holds one of `caller`'s slots until destroyed.
  class Held {
   public:
    Held(StreamSlots* slots, std::string caller)
        : slots_(slots), caller_(std::move(caller)) {}
    ~Held() { slots_->Release(caller_); }
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;

   private:
    StreamSlots* slots_;
    std::string caller_;
  };
  // One of `caller`'s slots, or RESOURCE_EXHAUSTED saying how many it holds.
  Result<std::unique_ptr<Held>> Acquire(const std::string& caller);

 private:
  void Release(const std::string& caller);
  const int per_caller_;
  const int total_;
  Mutex mu_;
  std::unordered_map<std::string, int> open_ GUARDED_BY(mu_);
  int open_total_ GUARDED_BY(mu_) = 0;
};

// Thread-safe. Every argument must outlive the service. `auth` null: no
// authentication (every caller is an anonymous admin); otherwise every call
// needs an admin or user token (a worker token is PERMISSION_DENIED), and
// users' sweeps are held to `user_policy`, admins' (and everyone's without
// authentication) to `admin_policy`.
class SweepServiceImpl final : public v1::SweepService::Service {
 public:
  static constexpr int kMaxStreamsPerCaller = 16;
  static constexpr int kMaxStreams = 64;
  SweepServiceImpl(store::SweepStore* store, scheduler::Scheduler* scheduler,
                   const store::ReadOnlyDb* results,
                   metrics::CoordinatorMetrics* metrics,
                   const auth::Authenticator* auth,
                   scheduler::SubmitPolicy user_policy = {},
                   scheduler::SubmitPolicy admin_policy = {})
      : store_(store),
        scheduler_(scheduler),
        results_(results),
        metrics_(metrics),
        auth_(auth),
        user_policy_(user_policy),
        admin_policy_(admin_policy) {}

  grpc::Status SubmitSweep(grpc::ServerContext*, const v1::SubmitSweepRequest*,
                           v1::SubmitSweepResponse*) override;
  grpc::Status GetSweep(grpc::ServerContext*, const v1::GetSweepRequest*,
                        v1::Sweep*) override;
  grpc::Status ListSweeps(grpc::ServerContext*, const v1::ListSweepsRequest*,
                          v1::ListSweepsResponse*) override;
  grpc::Status CancelSweep(grpc::ServerContext*, const v1::CancelSweepRequest*,
                           v1::Sweep*) override;
  grpc::Status ListTrials(grpc::ServerContext*, const v1::ListTrialsRequest*,
                          v1::ListTrialsResponse*) override;
  grpc::Status ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*,
                           v1::ListWorkersResponse*) override;
  grpc::Status WatchSweep(grpc::ServerContext*, const v1::WatchSweepRequest*,
                          grpc::ServerWriter<v1::WatchSweepResponse>*) override;
  grpc::Status Query(grpc::ServerContext*, const v1::QueryRequest*,
                     v1::QueryResponse*) override;
  grpc::Status GetSweepReport(grpc::ServerContext*,
                              const v1::GetSweepReportRequest*,
                              v1::SweepReport*) override;
  grpc::Status ExportMetrics(
      grpc::ServerContext*, const v1::ExportMetricsRequest*,
      grpc::ServerWriter<v1::ExportMetricsResponse>*) override;
  grpc::Status UploadModel(grpc::ServerContext*,
                           grpc::ServerReader<v1::UploadModelRequest>*,
                           v1::UploadModelResponse*) override;

 private:
  store::SweepStore* const store_;
  scheduler::Scheduler* const scheduler_;
  const store::ReadOnlyDb* const results_;
  metrics::CoordinatorMetrics* const metrics_;
  const auth::Authenticator* const auth_;
  const scheduler::SubmitPolicy user_policy_;
  const scheduler::SubmitPolicy admin_policy_;
  StreamSlots streams_{kMaxStreamsPerCaller, kMaxStreams};
};

// A token bucket per worker on metric points: `rate` points per second,
// holding at most one second's worth. Thread-safe.
class PointBudget {
 public:
  explicit PointBudget(double rate) : rate_(rate) {}
  // Debits `n` points from the worker's bucket, or RESOURCE_EXHAUSTED
  // saying when to retry. A batch larger than a second's worth passes when
  // the bucket is full (and leaves it in debt). rate 0: no limit.
  Status Take(int64_t worker_id, int64_t n);

 private:
  struct Bucket {
    double points = 0;
    std::chrono::steady_clock::time_point at;
  };
  const double rate_;
  Mutex mu_;
  std::unordered_map<int64_t, Bucket> buckets_ GUARDED_BY(mu_);
};

// Thread-safe. Every argument must outlive the service. `auth` null: no
// authentication; otherwise every call needs a worker token (or, with TLS
// client certificates, a verified certificate), and a worker id is only
// for the credential that registered it. Metric points are limited to
// `points_per_second` per worker (0: no limit).
//
// LeaseTrial is served by gRPC's callback API: a parked long poll holds no
// thread (the scheduler answers it from its dispatch thread); the other
// calls are short and run on the synchronous pool.
class WorkerServiceImpl final
    : public v1::WorkerService::WithCallbackMethod_LeaseTrial<
          v1::WorkerService::Service> {
 public:
  WorkerServiceImpl(store::SweepStore* store, scheduler::Scheduler* scheduler,
                    metrics::CoordinatorMetrics* metrics,
                    const auth::Authenticator* auth,
                    double points_per_second = 0)
      : store_(store),
        scheduler_(scheduler),
        metrics_(metrics),
        auth_(auth),
        point_budget_(points_per_second) {}

  grpc::Status RegisterWorker(grpc::ServerContext*,
                              const v1::RegisterWorkerRequest*,
                              v1::RegisterWorkerResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse*) override;
  grpc::ServerUnaryReactor* LeaseTrial(grpc::CallbackServerContext*,
                                       const v1::LeaseTrialRequest*,
                                       v1::LeaseTrialResponse*) override;
  grpc::Status ReportMetrics(grpc::ServerContext*,
                             const v1::ReportMetricsRequest*,
                             v1::ReportMetricsResponse*) override;
  grpc::Status FetchModel(grpc::ServerContext*, const v1::FetchModelRequest*,
                          grpc::ServerWriter<v1::FetchModelResponse>*) override;
  grpc::Status FinishTrial(grpc::ServerContext*, const v1::FinishTrialRequest*,
                           v1::FinishTrialResponse*) override;

 private:
  // OK when `caller` registered worker `worker_id` (always without
  // authentication); PERMISSION_DENIED when another credential did,
  // NOT_FOUND for an unknown worker.
  Status CheckOwner(int64_t worker_id, const auth::Caller& caller)
      EXCLUDES(owners_mu_);
  // A heartbeat of worker `worker_id`, whose caller CheckOwner() passed, sent
  // alone or folded into a report; the trials to stop go to
  // `stop_trial_ids`.
  Status Beat(int64_t worker_id, const v1::HeartbeatRequest& req,
              google::protobuf::RepeatedField<int64_t>* stop_trial_ids);

  store::SweepStore* const store_;
  scheduler::Scheduler* const scheduler_;
  metrics::CoordinatorMetrics* const metrics_;
  const auth::Authenticator* const auth_;
  PointBudget point_budget_;
  // Workers' owners as read from the store (they never change).
  Mutex owners_mu_;
  std::unordered_map<int64_t, std::string> owners_ GUARDED_BY(owners_mu_);
};

}  // namespace megabatch::service

#endif  // MEGABATCH_SERVER_SERVICE_SERVICES_H_
