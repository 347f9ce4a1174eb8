#include "server/service/services.h"

#include <google/protobuf/util/message_differencer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string_view>
#include <thread>
#include <type_traits>

#include "common/grpc_status.h"
#include "common/printable.h"
#include "common/sha256.h"
#include "server/service/convert.h"

namespace megabatch::service {
namespace {

constexpr int kMaxWaitMs = 60000;
constexpr int kMaxPointsPerReport = 100000;
using spec::kMaxNameLength;
constexpr int kMaxSlots = 4096;
constexpr size_t kMaxMessageLength = 65536;
constexpr int64_t kMaxQueryRows = 1000000;
constexpr int32_t kMaxQueryTimeoutMs = 300000;
constexpr size_t kExportChunkRows = 4096;
// Bytes of a model per FetchModel message (gRPC's default limit is 4 MiB).
constexpr size_t kModelChunkBytes = size_t{1} << 20;
constexpr int kMaxExportNames = 100;
constexpr int kMaxGpusPerWorker = 64;
// Paging (AIP-158) and watch messages: at most this many items, and a page
// ends before it would pass kMaxPageBytes, so every message fits a default
// 4 MiB client limit whatever the trials carry.
constexpr int32_t kSweepPageSize = 500;
constexpr int32_t kTrialPageSize = 1000;
constexpr int32_t kWorkerPageSize = 1000;
constexpr size_t kMaxPageBytes = 1 << 20;

// A page request: how many items, and after which key (-1: from the start).
struct Page {
  int64_t size = 0;
  int64_t after = -1;
};

// Page tokens are "<listing>:<scope>:<last key>" (opaque to clients), so a
// token from another listing or sweep is refused rather than misread.
std::string PageToken(const char* listing, int64_t scope, int64_t last) {
  return std::string(listing) + ":" + std::to_string(scope) + ":" +
         std::to_string(last);
}

Result<Page> ParsePage(int32_t page_size, const std::string& token,
                       const char* listing, int64_t scope, int32_t max_size) {
  if (page_size < 0) {
    return InvalidArgumentError("page_size: must be >= 0, got " +
                                std::to_string(page_size));
  }
  Page page;
  page.size = page_size == 0 ? max_size : std::min(page_size, max_size);
  if (token.empty()) return page;
  const std::string prefix =
      std::string(listing) + ":" + std::to_string(scope) + ":";
  const std::string rest = token.substr(std::min(prefix.size(), token.size()));
  if (token.compare(0, prefix.size(), prefix) != 0 || rest.empty() ||
      rest.size() > 19 ||
      rest.find_first_not_of("0123456789") != std::string::npos) {
    return InvalidArgumentError("page_token: not a token of this " +
                                std::string(listing) + " listing");
  }
  page.after = std::stoll(rest);
  return page;
}

// Whether an item of `size` bytes still fits a message that holds `count`
// items of `*bytes` bytes (the first always does); adds it to *bytes if so.
bool Fits(size_t size, int count, int64_t max_count, size_t* bytes) {
  if (count >= max_count || (count > 0 && *bytes + size > kMaxPageBytes))
    return false;
  *bytes += size;
  return true;
}

// Converts store rows into `out` while they fit one page of `max_count`;
// returns whether rows were left over (the page needs a next_page_token).
template <typename Row, typename Message>
bool FillPage(const std::vector<Row>& rows, int64_t max_count,
              google::protobuf::RepeatedPtrField<Message>* out) {
  size_t bytes = 0;
  for (const Row& row : rows) {
    Message message;
    ToProto(row, &message);
    if (!Fits(message.ByteSizeLong(), out->size(), max_count, &bytes))
      return true;
    *out->Add() = std::move(message);
  }
  return false;
}

// Which tokens a service takes: SweepService admin and user ones,
// WorkerService worker ones.
enum class Access { kUsers, kWorkers };

// The caller of an RPC, from its bearer token; an anonymous admin when
// authentication is off.
Result<auth::Caller> Authorize(const auth::Authenticator* auth,
                               const grpc::ServerContextBase* ctx,
                               Access access, const char* method) {
  if (auth == nullptr) return auth::Caller{};
  std::optional<std::string_view> header;
  const auto& metadata = ctx->client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    header = std::string_view(it->second.data(), it->second.size());
  }
  // A client certificate the coordinator verified (--tls-client-ca) is
  // refused on every call once revoked (--tls-crl); a worker may present
  // one instead of a token when its common name matches --tls-worker-cn.
  std::shared_ptr<const grpc::AuthContext> peer = ctx->auth_context();
  if (peer != nullptr && peer->IsPeerAuthenticated()) {
    auto property = [&](const char* name) {
      std::vector<grpc::string_ref> values = peer->FindPropertyValues(name);
      return values.empty() ? std::string()
                            : std::string(values[0].data(), values[0].size());
    };
    MEGABATCH_ASSIGN_OR_RETURN(
        std::optional<auth::Caller> certified,
        auth->CertificateCaller(property("x509_pem_cert"),
                                property("x509_common_name")));
    if (!header.has_value() && access == Access::kWorkers &&
        certified.has_value()) {
      return *certified;
    }
  }
  MEGABATCH_ASSIGN_OR_RETURN(auth::Caller caller, auth->Authenticate(header));
  const bool allowed = access == Access::kWorkers
                           ? caller.role == auth::Role::kWorker
                           : caller.role != auth::Role::kWorker;
  if (!allowed) {
    return Status(
        StatusCode::kPermissionDenied,
        std::string("token '") + caller.name + "' has role " +
            auth::RoleName(caller.role) + ", which may not call " + method +
            " (" +
            (access == Access::kWorkers ? "worker tokens only"
                                        : "admin and user tokens only") +
            ")");
  }
  return caller;
}

// Authorizes the call, runs a handler body (given the caller if it takes
// one), turns any escaped exception into INTERNAL, and counts the call with
// its code and duration.
template <typename Fn>
grpc::Status Guard(metrics::CoordinatorMetrics* metrics,
                   const auth::Authenticator* auth,
                   const grpc::ServerContext* ctx, Access access,
                   const char* method, Fn&& fn) {
  const auto start = std::chrono::steady_clock::now();
  grpc::Status status;
  try {
    Result<auth::Caller> caller = Authorize(auth, ctx, access, method);
    if (!caller.ok()) {
      status = ToGrpcStatus(caller.status());
    } else if constexpr (std::is_invocable_v<Fn, const auth::Caller&>) {
      status = ToGrpcStatus(fn(*caller));
    } else {
      status = ToGrpcStatus(fn());
    }
  } catch (const std::exception& e) {
    status = grpc::Status(grpc::StatusCode::INTERNAL,
                          std::string(method) + ": " + e.what());
  }
  metrics->ObserveRpc(
      method, static_cast<StatusCode>(status.error_code()),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count());
  return status;
}

// Guard for the calls the audit table records (docs/security.md): the
// authenticated caller, the call, `object()` (evaluated after the handler,
// so it may name what was made) and how the call ended.
template <typename ObjectFn, typename Fn>
grpc::Status AuditedGuard(store::SweepStore* store,
                          metrics::CoordinatorMetrics* metrics,
                          const auth::Authenticator* auth,
                          const grpc::ServerContext* ctx, Access access,
                          const char* method, ObjectFn&& object, Fn&& fn) {
  std::optional<auth::Caller> who;
  grpc::Status status =
      Guard(metrics, auth, ctx, access, method,
            [&](const auth::Caller& caller) -> Status {
              who = caller;
              if constexpr (std::is_invocable_v<Fn, const auth::Caller&>) {
                return fn(caller);
              } else {
                return fn();
              }
            });
  if (who.has_value()) {
    const auto [target, detail] = object();
    Status written = store->Audit(
        who->name, auth::RoleName(who->role), method, target,
        StatusCodeName(static_cast<StatusCode>(status.error_code())), detail,
        scheduler::NowSeconds());
    if (!written.ok()) {
      spdlog::warn("audit of {} by '{}' not stored: {}", method,
                   Printable(who->name), written.ToString());
    }
  }
  return status;
}

// Runs one store write, timing it under `op`.
template <typename Fn>
auto TimedWrite(metrics::CoordinatorMetrics* metrics, const char* op, Fn&& fn) {
  const auto start = std::chrono::steady_clock::now();
  auto result = fn();
  metrics->ObserveStoreWrite(op, std::chrono::duration<double>(
                                     std::chrono::steady_clock::now() - start)
                                     .count());
  return result;
}

Status CheckId(int64_t id, const char* field) {
  if (id <= 0) {
    return InvalidArgumentError(
        std::string(field) + ": must be positive, got " + std::to_string(id));
  }
  return Status();
}

Status CheckLease(const v1::TrialLease& lease) {
  MEGABATCH_RETURN_IF_ERROR(CheckId(lease.trial_id(), "lease.trial_id"));
  MEGABATCH_RETURN_IF_ERROR(CheckId(lease.lease_id(), "lease.lease_id"));
  if (lease.rank() < 0 || lease.rank() >= spec::kMaxRanksPerTrial) {
    return InvalidArgumentError("lease.rank: must be between 0 and " +
                                std::to_string(spec::kMaxRanksPerTrial - 1) +
                                ", got " + std::to_string(lease.rank()));
  }
  return Status();
}

}  // namespace

Status PointBudget::Take(int64_t worker_id, int64_t n) {
  if (rate_ <= 0) return Status();
  // Idle buckets are full again after a second; forget them beyond this
  // many, so made-up worker ids cannot grow the map without bound.
  constexpr size_t kMaxBuckets = 65536;
  const auto now = std::chrono::steady_clock::now();
  MutexLock lock(&mu_);
  if (buckets_.size() >= kMaxBuckets) {
    for (auto it = buckets_.begin(); it != buckets_.end();) {
      it = now - it->second.at > std::chrono::seconds(1) ? buckets_.erase(it)
                                                         : std::next(it);
    }
  }
  auto [it, fresh] = buckets_.try_emplace(worker_id, Bucket{rate_, now});
  Bucket& b = it->second;
  if (!fresh) {
    b.points = std::min(
        rate_,
        b.points + rate_ * std::chrono::duration<double>(now - b.at).count());
    b.at = now;
  }
  const double need = std::min(static_cast<double>(n), rate_);
  if (b.points < need) {
    const double wait_ms = 1e3 * (need - b.points) / rate_;
    return Status(StatusCode::kResourceExhausted,
                  "worker " + std::to_string(worker_id) + ": over " +
                      std::to_string(static_cast<int64_t>(rate_)) +
                      " metric points per second; retry in " +
                      std::to_string(static_cast<int64_t>(wait_ms) + 1) +
                      " ms");
  }
  b.points -= static_cast<double>(n);
  return Status();
}

Result<std::unique_ptr<StreamSlots::Held>> StreamSlots::Acquire(
    const std::string& caller) {
  MutexLock lock(&mu_);
  int& open = open_[caller];
  if (open >= per_caller_) {
    return Status(StatusCode::kResourceExhausted,
                  "'" + caller + "' already has " + std::to_string(open) +
                      " watch or export streams open; at most " +
                      std::to_string(per_caller_) + " at once");
  }
  if (open_total_ >= total_) {
    return Status(StatusCode::kResourceExhausted,
                  std::to_string(open_total_) +
                      " watch or export streams are open on this "
                      "coordinator; at most " +
                      std::to_string(total_) + " at once");
  }
  ++open;
  ++open_total_;
  return std::make_unique<Held>(this, caller);
}

void StreamSlots::Release(const std::string& caller) {
  MutexLock lock(&mu_);
  --open_total_;
  if (--open_[caller] <= 0) open_.erase(caller);
}

grpc::Status SweepServiceImpl::SubmitSweep(grpc::ServerContext* ctx,
                                           const v1::SubmitSweepRequest* req,
                                           v1::SubmitSweepResponse* resp) {
  return AuditedGuard(
      store_, metrics_, auth_, ctx, Access::kUsers, "SubmitSweep",
      [&] {
        return std::pair<std::string, std::string>(
            resp->sweep_id() > 0 ? "sweep " + std::to_string(resp->sweep_id())
                                 : "",
            "request_id " + req->request_id() + ", " +
                std::to_string(req->spec().size()) + " bytes of spec");
      },
      [&](const auth::Caller& caller) -> Status {
        spec::SpecFormat format;
        if (req->format().empty()) {
          format = spec::SpecFormat::kAuto;
        } else if (req->format() == "yaml") {
          format = spec::SpecFormat::kYaml;
        } else if (req->format() == "json") {
          format = spec::SpecFormat::kJson;
        } else {
          return InvalidArgumentError(
              "format: must be yaml, json or empty, got '" + req->format() +
              "'");
        }
        if (req->request_id().size() > kMaxNameLength) {
          return InvalidArgumentError("request_id: at most " +
                                      std::to_string(kMaxNameLength) +
                                      " characters");
        }
        MEGABATCH_ASSIGN_OR_RETURN(
            auto submitted, scheduler_->Submit(req->spec(), format,
                                               req->request_id(), caller.name,
                                               caller.role == auth::Role::kUser
                                                   ? user_policy_
                                                   : admin_policy_));
        resp->set_sweep_id(submitted.sweep_id);
        resp->set_trials(submitted.trials);
        resp->set_repeated(submitted.repeated);
        return Status();
      });
}

grpc::Status SweepServiceImpl::GetSweep(grpc::ServerContext* ctx,
                                        const v1::GetSweepRequest* req,
                                        v1::Sweep* resp) {
  return Guard(
      metrics_, auth_, ctx, Access::kUsers, "GetSweep", [&]() -> Status {
        MEGABATCH_RETURN_IF_ERROR(CheckId(req->sweep_id(), "sweep_id"));
        MEGABATCH_ASSIGN_OR_RETURN(auto row, store_->GetSweep(req->sweep_id()));
        ToProto(row, resp);
        return Status();
      });
}

grpc::Status SweepServiceImpl::ListSweeps(grpc::ServerContext* ctx,
                                          const v1::ListSweepsRequest* req,
                                          v1::ListSweepsResponse* resp) {
  return Guard(
      metrics_, auth_, ctx, Access::kUsers, "ListSweeps", [&]() -> Status {
        MEGABATCH_ASSIGN_OR_RETURN(
            auto page, ParsePage(req->page_size(), req->page_token(), "sweeps",
                                 0, kSweepPageSize));
        MEGABATCH_ASSIGN_OR_RETURN(
            auto rows, store_->ListSweeps(std::max<int64_t>(page.after, 0),
                                          page.size + 1));
        if (FillPage(rows, page.size, resp->mutable_sweeps())) {
          resp->set_next_page_token(
              PageToken("sweeps", 0, resp->sweeps().rbegin()->id()));
        }
        return Status();
      });
}

grpc::Status SweepServiceImpl::CancelSweep(grpc::ServerContext* ctx,
                                           const v1::CancelSweepRequest* req,
                                           v1::Sweep* resp) {
  return AuditedGuard(
      store_, metrics_, auth_, ctx, Access::kUsers, "CancelSweep",
      [&] {
        return std::pair<std::string, std::string>(
            "sweep " + std::to_string(req->sweep_id()), "");
      },
      [&](const auth::Caller& caller) -> Status {
        MEGABATCH_RETURN_IF_ERROR(CheckId(req->sweep_id(), "sweep_id"));
        if (caller.role != auth::Role::kAdmin) {
          MEGABATCH_ASSIGN_OR_RETURN(auto sweep,
                                     store_->GetSweep(req->sweep_id()));
          if (sweep.owner != caller.name) {
            return Status(StatusCode::kPermissionDenied,
                          "sweep " + std::to_string(req->sweep_id()) +
                              " belongs to '" + sweep.owner +
                              "'; only its owner or an admin may cancel it");
          }
        }
        MEGABATCH_ASSIGN_OR_RETURN(auto row,
                                   scheduler_->Cancel(req->sweep_id()));
        ToProto(row, resp);
        return Status();
      });
}

grpc::Status SweepServiceImpl::ListTrials(grpc::ServerContext* ctx,
                                          const v1::ListTrialsRequest* req,
                                          v1::ListTrialsResponse* resp) {
  return Guard(
      metrics_, auth_, ctx, Access::kUsers, "ListTrials", [&]() -> Status {
        MEGABATCH_RETURN_IF_ERROR(CheckId(req->sweep_id(), "sweep_id"));
        MEGABATCH_ASSIGN_OR_RETURN(
            auto page, ParsePage(req->page_size(), req->page_token(), "trials",
                                 req->sweep_id(), kTrialPageSize));
        MEGABATCH_ASSIGN_OR_RETURN(
            auto rows,
            store_->ListTrials(req->sweep_id(), page.after, page.size + 1));
        if (FillPage(rows, page.size, resp->mutable_trials())) {
          resp->set_next_page_token(PageToken(
              "trials", req->sweep_id(), resp->trials().rbegin()->index()));
        }
        return Status();
      });
}

grpc::Status SweepServiceImpl::ListWorkers(grpc::ServerContext* ctx,
                                           const v1::ListWorkersRequest* req,
                                           v1::ListWorkersResponse* resp) {
  return Guard(
      metrics_, auth_, ctx, Access::kUsers, "ListWorkers", [&]() -> Status {
        MEGABATCH_ASSIGN_OR_RETURN(
            auto page, ParsePage(req->page_size(), req->page_token(), "workers",
                                 0, kWorkerPageSize));
        MEGABATCH_ASSIGN_OR_RETURN(
            auto rows, store_->ListWorkers(std::max<int64_t>(page.after, 0),
                                           page.size + 1));
        if (FillPage(rows, page.size, resp->mutable_workers())) {
          resp->set_next_page_token(
              PageToken("workers", 0, resp->workers().rbegin()->id()));
        }
        return Status();
      });
}

grpc::Status SweepServiceImpl::WatchSweep(
    grpc::ServerContext* ctx, const v1::WatchSweepRequest* req,
    grpc::ServerWriter<v1::WatchSweepResponse>* writer) {
  return Guard(
      metrics_, auth_, ctx, Access::kUsers, "WatchSweep",
      [&](const auth::Caller& caller) -> Status {
        MEGABATCH_RETURN_IF_ERROR(CheckId(req->sweep_id(), "sweep_id"));
        // Held until the stream ends.
        MEGABATCH_ASSIGN_OR_RETURN(auto slot, streams_.Acquire(caller.name));
        // A snapshot on every state change, and at least once a second so that
        // the latest metrics show while no trial changes state; but never
        // sooner after the last than 4 times what that one cost, so that a
        // watcher of a big, busy sweep takes at most a fifth of a core.
        int64_t version = store_->version();
        std::map<int64_t, v1::Trial>
            sent;  // what the watcher has of each trial
        for (bool first = true; !ctx->IsCancelled(); first = false) {
          const auto started = std::chrono::steady_clock::now();
          // A token revoked while the stream is open ends it at the next
          // snapshot.
          if (!first) {
            MEGABATCH_RETURN_IF_ERROR(
                Authorize(auth_, ctx, Access::kUsers, "WatchSweep").status());
          }
          MEGABATCH_ASSIGN_OR_RETURN(auto sweep,
                                     store_->GetSweep(req->sweep_id()));
          // Page by page: the store's lock is held for one page at a time,
          // so writers (metric reports, heartbeats) go on in between.
          std::vector<store::TrialRow> trials;
          for (int64_t after = -1;;) {
            MEGABATCH_ASSIGN_OR_RETURN(
                auto page,
                store_->ListTrials(req->sweep_id(), after, kTrialPageSize));
            if (page.empty()) break;
            after = page.back().index;
            const bool last = page.size() < static_cast<size_t>(kTrialPageSize);
            trials.insert(trials.end(), std::make_move_iterator(page.begin()),
                          std::make_move_iterator(page.end()));
            if (last) break;
          }
          // The trials that changed since they were last sent (all, the first
          // time), in messages of at most kTrialPageSize trials and
          // kMaxPageBytes.
          std::vector<v1::Trial> changed;
          for (const auto& t : trials) {
            v1::Trial trial;
            ToProto(t, &trial);
            auto it = sent.find(t.id);
            if (it != sent.end() &&
                google::protobuf::util::MessageDifferencer::Equals(it->second,
                                                                   trial)) {
              continue;
            }
            sent[t.id] = trial;
            changed.push_back(std::move(trial));
          }
          size_t next = 0;
          do {
            v1::WatchSweepResponse update;
            ToProto(sweep, update.mutable_sweep());
            size_t bytes = 0;
            while (next < changed.size() &&
                   Fits(changed[next].ByteSizeLong(), update.trials_size(),
                        kTrialPageSize, &bytes)) {
              *update.add_trials() = std::move(changed[next++]);
            }
            update.set_snapshot_complete(next == changed.size());
            if (!writer->Write(update)) {
              return Status(StatusCode::kCancelled, "watcher went away");
            }
          } while (next < changed.size());
          if (store::IsFinal(sweep.state)) return Status();
          const auto now = std::chrono::steady_clock::now();
          const auto earliest = now + 4 * (now - started);
          version = scheduler_->WaitForChange(
              version, std::max(earliest, now + std::chrono::seconds(1)));
          if (std::chrono::steady_clock::now() < earliest)
            std::this_thread::sleep_until(earliest);
        }
        return Status(StatusCode::kCancelled, "watch cancelled by the client");
      });
}

grpc::Status SweepServiceImpl::Query(grpc::ServerContext* ctx,
                                     const v1::QueryRequest* req,
                                     v1::QueryResponse* resp) {
  return AuditedGuard(
      store_, metrics_, auth_, ctx, Access::kUsers, "Query",
      [&] { return std::pair<std::string, std::string>("", req->sql()); },
      [&](const auth::Caller& caller) -> Status {
        if (req->sql().empty()) return InvalidArgumentError("sql: required");
        if (req->max_rows() < 0 || req->max_rows() > kMaxQueryRows) {
          return InvalidArgumentError("max_rows: must be between 0 and " +
                                      std::to_string(kMaxQueryRows) + ", got " +
                                      std::to_string(req->max_rows()));
        }
        if (req->timeout_ms() < 0 || req->timeout_ms() > kMaxQueryTimeoutMs) {
          return InvalidArgumentError("timeout_ms: must be between 0 and " +
                                      std::to_string(kMaxQueryTimeoutMs) +
                                      ", got " +
                                      std::to_string(req->timeout_ms()));
        }
        store::QueryLimits limits;
        if (req->max_rows() > 0) limits.max_rows = req->max_rows();
        if (req->timeout_ms() > 0)
          limits.timeout = std::chrono::milliseconds(req->timeout_ms());
        limits.cancelled = [ctx] { return ctx->IsCancelled(); };
        if (caller.role != auth::Role::kAdmin) limits.viewer = caller.name;
        MEGABATCH_ASSIGN_OR_RETURN(auto result,
                                   results_->Query(req->sql(), limits));
        ToProto(result, resp);
        return Status();
      });
}

grpc::Status SweepServiceImpl::GetSweepReport(
    grpc::ServerContext* ctx, const v1::GetSweepReportRequest* req,
    v1::SweepReport* resp) {
  return Guard(
      metrics_, auth_, ctx, Access::kUsers, "GetSweepReport", [&]() -> Status {
        MEGABATCH_RETURN_IF_ERROR(CheckId(req->sweep_id(), "sweep_id"));
        MEGABATCH_ASSIGN_OR_RETURN(auto sweep,
                                   store_->GetSweep(req->sweep_id()));
        MEGABATCH_ASSIGN_OR_RETURN(auto db, results_->Connect());
        MEGABATCH_ASSIGN_OR_RETURN(auto report,
                                   report::BuildReport(*db, req->sweep_id()));
        ToProto(sweep, resp->mutable_sweep());
        ToProto(report, resp);
        return Status();
      });
}

grpc::Status SweepServiceImpl::ExportMetrics(
    grpc::ServerContext* ctx, const v1::ExportMetricsRequest* req,
    grpc::ServerWriter<v1::ExportMetricsResponse>* writer) {
  return Guard(
      metrics_, auth_, ctx, Access::kUsers, "ExportMetrics",
      [&](const auth::Caller& caller) -> Status {
        MEGABATCH_RETURN_IF_ERROR(CheckId(req->sweep_id(), "sweep_id"));
        // Held until the stream ends.
        MEGABATCH_ASSIGN_OR_RETURN(auto slot, streams_.Acquire(caller.name));
        if (req->names_size() > kMaxExportNames) {
          return InvalidArgumentError("names: at most " +
                                      std::to_string(kMaxExportNames));
        }
        std::vector<std::string> names(req->names().begin(),
                                       req->names().end());
        return results_->ExportMetrics(
            req->sweep_id(), names, kExportChunkRows,
            [&](std::vector<store::MetricRecord>& chunk) -> Status {
              v1::ExportMetricsResponse out;
              for (const auto& r : chunk) ToProto(r, out.add_rows());
              if (!writer->Write(out)) {
                return Status(StatusCode::kCancelled,
                              "export: the client went away");
              }
              return Status();
            });
      });
}

grpc::Status SweepServiceImpl::UploadModel(
    grpc::ServerContext* ctx,
    grpc::ServerReader<v1::UploadModelRequest>* reader,
    v1::UploadModelResponse* resp) {
  return AuditedGuard(
      store_, metrics_, auth_, ctx, Access::kUsers, "UploadModel",
      [&] {
        return std::pair<std::string, std::string>(
            resp->sha256().empty() ? "" : "model " + resp->sha256(),
            std::to_string(resp->bytes()) + " bytes");
      },
      [&]() -> Status {
        const store::ModelStore* models = scheduler_->options().models;
        if (models == nullptr) {
          return FailedPreconditionError(
              "this coordinator keeps no models (it was started without a "
              "model store)");
        }
        MEGABATCH_ASSIGN_OR_RETURN(auto upload, models->Begin());
        v1::UploadModelRequest chunk;
        while (reader->Read(&chunk)) {
          MEGABATCH_RETURN_IF_ERROR(upload->Append(chunk.data()));
        }
        if (ctx->IsCancelled()) {
          return Status(StatusCode::kCancelled,
                        "the upload was cancelled; nothing was stored");
        }
        MEGABATCH_ASSIGN_OR_RETURN(store::ModelStore::Stored stored,
                                   upload->Commit());
        resp->set_sha256(stored.sha256);
        resp->set_bytes(stored.bytes);
        resp->set_existed(stored.existed);
        return Status();
      });
}

Status WorkerServiceImpl::CheckOwner(int64_t worker_id,
                                     const auth::Caller& caller) {
  MEGABATCH_RETURN_IF_ERROR(CheckId(worker_id, "worker_id"));
  if (auth_ == nullptr) return Status();
  std::optional<std::string> owner;
  {
    MutexLock lock(&owners_mu_);
    if (auto it = owners_.find(worker_id); it != owners_.end()) {
      owner = it->second;
    }
  }
  if (!owner.has_value()) {
    MEGABATCH_ASSIGN_OR_RETURN(std::string stored,
                               store_->WorkerOwner(worker_id));
    owner = stored;
    MutexLock lock(&owners_mu_);
    owners_.emplace(worker_id, *owner);
  }
  if (*owner != caller.name) {
    Status denied(StatusCode::kPermissionDenied,
                  "worker " + std::to_string(worker_id) +
                      " was registered by '" + *owner + "'; '" + caller.name +
                      "' may not act for it");
    (void)store_->Audit(caller.name, auth::RoleName(caller.role), "ActAsWorker",
                        "worker " + std::to_string(worker_id),
                        StatusCodeName(denied.code()), denied.message(),
                        scheduler::NowSeconds());
    return denied;
  }
  return Status();
}

grpc::Status WorkerServiceImpl::RegisterWorker(
    grpc::ServerContext* ctx, const v1::RegisterWorkerRequest* req,
    v1::RegisterWorkerResponse* resp) {
  return AuditedGuard(
      store_, metrics_, auth_, ctx, Access::kWorkers, "RegisterWorker",
      [&] {
        return std::pair<std::string, std::string>(
            resp->worker_id() > 0
                ? "worker " + std::to_string(resp->worker_id())
                : "",
            "name " + req->name() + ", " + std::to_string(req->slots()) +
                " slots");
      },
      [&](const auth::Caller& caller) -> Status {
        if (req->name().empty() || req->name().size() > kMaxNameLength) {
          return InvalidArgumentError("name: must be 1 to " +
                                      std::to_string(kMaxNameLength) +
                                      " characters long");
        }
        if (req->slots() < 1 || req->slots() > kMaxSlots) {
          return InvalidArgumentError("slots: must be between 1 and " +
                                      std::to_string(kMaxSlots) + ", got " +
                                      std::to_string(req->slots()));
        }
        store::WorkerRendezvous rendezvous;
        if (!req->rendezvous_host().empty()) {
          if (req->rendezvous_host().size() > kMaxNameLength) {
            return InvalidArgumentError("rendezvous_host: at most " +
                                        std::to_string(kMaxNameLength) +
                                        " characters");
          }
          rendezvous.host = req->rendezvous_host();
        }
        if (req->rendezvous_port_first() != 0 ||
            req->rendezvous_port_count() != 0) {
          const int64_t first = req->rendezvous_port_first(),
                        count = req->rendezvous_port_count();
          if (first < 1 || count < 1 || first + count - 1 > 65535) {
            return InvalidArgumentError(
                "rendezvous_port_first/rendezvous_port_count: a range within "
                "1..65535, got " +
                std::to_string(first) + " + " + std::to_string(count));
          }
          rendezvous.port_first = static_cast<int32_t>(first);
          rendezvous.port_count = static_cast<int32_t>(count);
        }
        MEGABATCH_ASSIGN_OR_RETURN(
            auto id, store_->RegisterWorker(req->name(), req->slots(),
                                            scheduler::NowSeconds(), rendezvous,
                                            caller.name));
        resp->set_worker_id(id);
        resp->set_heartbeat_interval_ms(static_cast<int32_t>(
            scheduler_->options().heartbeat_interval.count()));
        resp->set_lease_timeout_ms(
            static_cast<int32_t>(scheduler_->options().lease_timeout.count()));
        resp->set_artifacts_dir(scheduler_->options().artifacts_dir);
        resp->set_checkpoint_history_ms(
            scheduler_->options().checkpoint_history.count());
        return Status();
      });
}

Status WorkerServiceImpl::Beat(
    int64_t worker_id, const v1::HeartbeatRequest& req,
    google::protobuf::RepeatedField<int64_t>* stop_trial_ids) {
  if (req.running_size() > kMaxSlots) {
    return InvalidArgumentError("running: at most " +
                                std::to_string(kMaxSlots) +
                                " trials (a worker's slots), got " +
                                std::to_string(req.running_size()));
  }
  std::vector<store::RunningLease> running;
  for (const auto& lease : req.running()) {
    MEGABATCH_RETURN_IF_ERROR(CheckLease(lease));
    running.push_back({lease.trial_id(), lease.lease_id(), lease.rank()});
  }
  if (req.gpus_size() > kMaxGpusPerWorker) {
    return InvalidArgumentError("gpus: at most " +
                                std::to_string(kMaxGpusPerWorker));
  }
  std::vector<metrics::GpuSample> gpus;
  for (int i = 0; i < req.gpus_size(); ++i) {
    const v1::GpuStats& g = req.gpus(i);
    const std::string field = "gpus[" + std::to_string(i) + "]";
    if (g.index() < 0)
      return InvalidArgumentError(field + ".index: must be >= 0");
    if (!(g.utilization_ratio() >= 0 && g.utilization_ratio() <= 1)) {
      return InvalidArgumentError(
          field + ".utilization_ratio: must be between 0 and 1");
    }
    if (g.memory_used_bytes() < 0 || g.memory_total_bytes() < 0) {
      return InvalidArgumentError(field + ".memory_*_bytes: must be >= 0");
    }
    gpus.push_back({g.index(), g.utilization_ratio(),
                    static_cast<double>(g.memory_used_bytes()),
                    static_cast<double>(g.memory_total_bytes())});
  }
  auto stop = TimedWrite(metrics_, "heartbeat", [&] {
    return store_->Heartbeat(worker_id, running, scheduler::NowSeconds());
  });
  if (!stop.ok()) return stop.status();
  metrics_->RecordWorkerGpus(worker_id, std::move(gpus));
  for (int64_t id : *stop) stop_trial_ids->Add(id);
  return Status();
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* ctx,
                                          const v1::HeartbeatRequest* req,
                                          v1::HeartbeatResponse* resp) {
  return Guard(
      metrics_, auth_, ctx, Access::kWorkers, "Heartbeat",
      [&](const auth::Caller& caller) -> Status {
        MEGABATCH_RETURN_IF_ERROR(CheckOwner(req->worker_id(), caller));
        return Beat(req->worker_id(), *req, resp->mutable_stop_trial_ids());
      });
}

namespace {

// One LeaseTrial call: answered when the scheduler answers its request, or
// at once for a call refused before it is made; deletes itself when gRPC is
// done with it.
class LeaseReactor final : public grpc::ServerUnaryReactor {
 public:
  LeaseReactor(grpc::CallbackServerContext* ctx,
               metrics::CoordinatorMetrics* metrics,
               scheduler::Scheduler* scheduler, v1::LeaseTrialResponse* resp)
      : ctx_(ctx), metrics_(metrics), scheduler_(scheduler), resp_(resp) {}

  void Answer(Status status) {
    metrics_->ObserveRpc(
        "LeaseTrial", status.code(),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_)
            .count());
    Finish(ToGrpcStatus(status));
  }

  // Answers with the scheduler's reply; a lease its caller can no longer
  // receive is released at once instead of waiting out the lease timeout.
  // Runs on the scheduler's dispatch thread: nothing escapes it.
  void Leased(int64_t worker_id, Result<std::optional<store::Lease>> lease) {
    Status status = lease.status();
    try {
      if (lease.ok() && lease->has_value()) {
        const store::Lease& l = **lease;
        if (ctx_->IsCancelled()) {
          status = scheduler_->ReleaseUnreceived(l, worker_id);
        } else {
          resp_->mutable_lease()->set_trial_id(l.trial_id);
          resp_->mutable_lease()->set_lease_id(l.lease_id);
          resp_->mutable_lease()->set_rank(l.rank);
          resp_->set_config_json(l.config_json);
          resp_->set_resume_max_step(l.resume_max_step);
        }
      }
    } catch (const std::exception& e) {
      status = InternalError(std::string("LeaseTrial: ") + e.what());
    }
    {
      // An answer before Wait() is given to it: Wait() finishes the call,
      // so that nothing touches the reactor after gRPC deletes it.
      MutexLock lock(&mu_);
      if (request_ == nullptr) {
        early_ = std::move(status);
        return;
      }
    }
    Answer(std::move(status));
  }

  // Hands the reactor its scheduler request; after this returns the reactor
  // may be gone.
  void Wait(std::shared_ptr<scheduler::Scheduler::LeaseRequest> request) {
    std::optional<Status> early;
    bool cancelled;
    {
      MutexLock lock(&mu_);
      request_ = request;
      early = std::move(early_);
      cancelled = cancelled_;
    }
    if (early.has_value()) return Answer(std::move(*early));
    if (cancelled) scheduler_->CancelLease(request);
  }

  void OnCancel() override {
    std::shared_ptr<scheduler::Scheduler::LeaseRequest> request;
    {
      MutexLock lock(&mu_);
      cancelled_ = true;
      request = request_;
    }
    // Before Wait(): Wait() cancels it.
    if (request != nullptr) scheduler_->CancelLease(request);
  }

  void OnDone() override { delete this; }

 private:
  grpc::CallbackServerContext* const ctx_;
  metrics::CoordinatorMetrics* const metrics_;
  scheduler::Scheduler* const scheduler_;
  v1::LeaseTrialResponse* const resp_;
  const std::chrono::steady_clock::time_point start_ =
      std::chrono::steady_clock::now();
  Mutex mu_;
  bool cancelled_ GUARDED_BY(mu_) = false;
  std::optional<Status> early_ GUARDED_BY(mu_);
  std::shared_ptr<scheduler::Scheduler::LeaseRequest> request_ GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerUnaryReactor* WorkerServiceImpl::LeaseTrial(
    grpc::CallbackServerContext* ctx, const v1::LeaseTrialRequest* req,
    v1::LeaseTrialResponse* resp) {
  auto* reactor = new LeaseReactor(ctx, metrics_, scheduler_, resp);
  Status checked = [&]() -> Status {
    MEGABATCH_ASSIGN_OR_RETURN(
        auth::Caller caller,
        Authorize(auth_, ctx, Access::kWorkers, "LeaseTrial"));
    MEGABATCH_RETURN_IF_ERROR(CheckOwner(req->worker_id(), caller));
    if (req->wait_ms() < 0 || req->wait_ms() > kMaxWaitMs) {
      return InvalidArgumentError("wait_ms: must be between 0 and 60000, got " +
                                  std::to_string(req->wait_ms()));
    }
    return Status();
  }();
  if (!checked.ok()) {
    reactor->Answer(checked);
    return reactor;
  }
  const int64_t worker_id = req->worker_id();
  reactor->Wait(scheduler_->LeaseAsync(
      worker_id, std::chrono::milliseconds(req->wait_ms()),
      [reactor, worker_id](Result<std::optional<store::Lease>> lease) {
        reactor->Leased(worker_id, std::move(lease));
      }));
  return reactor;
}

grpc::Status WorkerServiceImpl::ReportMetrics(
    grpc::ServerContext* ctx, const v1::ReportMetricsRequest* req,
    v1::ReportMetricsResponse* resp) {
  return Guard(
      metrics_, auth_, ctx, Access::kWorkers, "ReportMetrics",
      [&](const auth::Caller& caller) -> Status {
        MEGABATCH_RETURN_IF_ERROR(CheckOwner(req->worker_id(), caller));
        if (req->has_heartbeat()) {
          if (req->heartbeat().worker_id() != 0 &&
              req->heartbeat().worker_id() != req->worker_id()) {
            return InvalidArgumentError(
                "heartbeat.worker_id: " +
                std::to_string(req->heartbeat().worker_id()) +
                " is not this report's worker_id " +
                std::to_string(req->worker_id()) + " (or 0)");
          }
          MEGABATCH_RETURN_IF_ERROR(Beat(req->worker_id(), req->heartbeat(),
                                         resp->mutable_stop_trial_ids()));
        }
        MEGABATCH_RETURN_IF_ERROR(CheckLease(req->lease()));
        if (req->points_size() > kMaxPointsPerReport) {
          return Status(StatusCode::kResourceExhausted,
                        "points: " + std::to_string(req->points_size()) +
                            " in one report; at most 100000");
        }
        if (req->lease().rank() != 0) {
          return FailedPreconditionError(
              "lease.rank: only rank 0 of a trial reports metrics");
        }
        MEGABATCH_RETURN_IF_ERROR(
            point_budget_.Take(req->worker_id(), req->points_size()));
        std::vector<store::MetricPoint> points;
        points.reserve(req->points_size());
        for (int i = 0; i < req->points_size(); ++i) {
          const auto& p = req->points(i);
          if (p.name().empty() || p.name().size() > kMaxNameLength) {
            return InvalidArgumentError(
                "points[" + std::to_string(i) + "].name: must be 1 to " +
                std::to_string(kMaxNameLength) + " characters long");
          }
          if (p.step() < 0) {
            return InvalidArgumentError("points[" + std::to_string(i) +
                                        "].step: must be >= 0, got " +
                                        std::to_string(p.step()));
          }
          points.push_back({p.name(), p.step(), p.value()});
        }
        // Early stopping may prune the trial; the store tells the scheduler.
        MEGABATCH_RETURN_IF_ERROR(TimedWrite(metrics_, "append_metrics", [&] {
          return store_->AppendMetrics(
              req->lease().trial_id(), req->lease().lease_id(),
              req->worker_id(), points, scheduler::NowSeconds());
        }));
        metrics_->RecordTrialPoints(req->lease().trial_id(), points);
        resp->set_accepted(req->points_size());
        return Status();
      });
}

grpc::Status WorkerServiceImpl::FetchModel(
    grpc::ServerContext* ctx, const v1::FetchModelRequest* req,
    grpc::ServerWriter<v1::FetchModelResponse>* writer) {
  return Guard(
      metrics_, auth_, ctx, Access::kWorkers, "FetchModel",
      [&](const auth::Caller& caller) -> Status {
        MEGABATCH_RETURN_IF_ERROR(CheckOwner(req->worker_id(), caller));
        const store::ModelStore* models = scheduler_->options().models;
        if (models == nullptr || !models->Has(req->sha256())) {
          return NotFoundError("sha256: no model " +
                               req->sha256().substr(0, kSha256HexChars) +
                               " on this coordinator");
        }
        std::ifstream in(models->PathOf(req->sha256()), std::ios::binary);
        if (!in.is_open()) {
          return InternalError("model " + req->sha256() + ": cannot open");
        }
        std::string buffer(kModelChunkBytes, '\0');
        v1::FetchModelResponse out;
        while (in) {
          in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
          if (in.gcount() == 0) break;
          out.set_data(buffer.data(), static_cast<size_t>(in.gcount()));
          if (!writer->Write(out)) {
            return Status(StatusCode::kCancelled,
                          "fetch: the worker went away");
          }
        }
        if (in.bad()) {
          return InternalError("model " + req->sha256() + ": read error");
        }
        return Status();
      });
}

grpc::Status WorkerServiceImpl::FinishTrial(grpc::ServerContext* ctx,
                                            const v1::FinishTrialRequest* req,
                                            v1::FinishTrialResponse* resp) {
  return Guard(
      metrics_, auth_, ctx, Access::kWorkers, "FinishTrial",
      [&](const auth::Caller& caller) -> Status {
        MEGABATCH_RETURN_IF_ERROR(CheckOwner(req->worker_id(), caller));
        MEGABATCH_RETURN_IF_ERROR(CheckLease(req->lease()));
        if (req->message().size() > kMaxMessageLength ||
            req->stderr_tail().size() > kMaxMessageLength) {
          return InvalidArgumentError(
              "message/stderr_tail: at most 65536 bytes");
        }
        if (req->preempted()) {
          MEGABATCH_RETURN_IF_ERROR(TimedWrite(metrics_, "finish_trial", [&] {
            return store_->ReleaseLease(
                req->lease().trial_id(), req->lease().lease_id(),
                req->worker_id(), scheduler::NowSeconds(), req->lease().rank(),
                store::Release::kPreempted, req->message());
          }));
          resp->set_state(v1::TRIAL_STATE_QUEUED);
          return Status();
        }
        store::TrialState outcome;
        switch (req->outcome()) {
          case v1::TRIAL_STATE_COMPLETED:
            outcome = store::TrialState::kCompleted;
            break;
          case v1::TRIAL_STATE_FAILED:
            outcome = store::TrialState::kFailed;
            break;
          case v1::TRIAL_STATE_DIVERGED:
            outcome = store::TrialState::kDiverged;
            break;
          default:
            return InvalidArgumentError(
                "outcome: must be COMPLETED, FAILED or DIVERGED, got " +
                v1::TrialState_Name(req->outcome()));
        }
        auto state = TimedWrite(metrics_, "finish_trial", [&] {
          return scheduler_->Finish(req->lease().trial_id(),
                                    req->lease().lease_id(), req->worker_id(),
                                    outcome, req->message(), req->stderr_tail(),
                                    req->lease().rank(), !req->no_retry());
        });
        if (!state.ok()) return state.status();
        resp->set_state(ToProto(*state));
        return Status();
      });
}

}  // namespace megabatch::service
