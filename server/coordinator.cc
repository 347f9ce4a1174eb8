#include "server/coordinator.h"

#include <fcntl.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>
#include <grpcpp/resource_quota.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/channel.h"
#include "server/auth/token_store.h"
#include "server/store/backup.h"

namespace megabatch {

namespace {
constexpr int kMaxMessageBytes = 16 << 20;
// How long a shutdown lets health watchers hear NOT_SERVING before it
// cancels their streams.
constexpr auto kHealthDrain = std::chrono::milliseconds(250);

// Makes sure the admin token in `path` is registered (see
// CoordinatorOptions::auth_file).
Status BootstrapAdminToken(const std::string& db_path,
                           const std::string& path) {
  std::string token;
  if (std::filesystem::exists(path)) {
    Result<std::string> loaded = LoadToken(path);
    if (!loaded.ok() || !auth::IsWellFormedToken(*loaded)) {
      return InvalidArgumentError(
          "--auth-file: " + path +
          " must hold the admin token (mbt_ and 64 hex digits, as the "
          "coordinator writes it when the file does not exist) and nothing "
          "else");
    }
    token = *loaded;
  } else {
    MEGABATCH_ASSIGN_OR_RETURN(std::string fresh, auth::NewToken());
    token = fresh;
    // Owner-only from its creation.
    const int fd =
        open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
      return InvalidArgumentError("--auth-file: cannot create " + path);
    const std::string line = token + "\n";
    const bool written = write(fd, line.data(), line.size()) ==
                         static_cast<ssize_t>(line.size());
    if (close(fd) != 0 || !written) {
      return InvalidArgumentError("--auth-file: cannot write " + path);
    }
    spdlog::info("new admin token written to {}", path);
  }
  MEGABATCH_ASSIGN_OR_RETURN(std::unique_ptr<auth::TokenStore> tokens,
                             auth::TokenStore::Open(db_path));
  Result<int64_t> id = tokens->Create("admin", "admin", auth::Sha256Hex(token),
                                      scheduler::NowSeconds());
  if (!id.ok() && id.status().code() != StatusCode::kAlreadyExists)
    return id.status();
  return Status();
}

// Takes gRPC's server reflection off a server (linking its library
// registers it for every server built in the process).
class WithoutReflection : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*
                         plugins) override {
    plugins->erase(
        std::remove_if(plugins->begin(), plugins->end(),
                       [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
                         return p->name().find("reflection") !=
                                std::string::npos;
                       }),
        plugins->end());
  }
};

// The server credentials for the options: TLS when a certificate is given.
Result<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const CoordinatorOptions& options) {
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return InvalidArgumentError(
        "--tls-cert and --tls-key: give both or neither");
  }
  if (options.tls_client_ca.empty() &&
      (options.tls_require_client_cert || !options.tls_worker_cn.empty() ||
       !options.tls_crl.empty())) {
    return InvalidArgumentError(
        "--tls-require-client-cert, --tls-worker-cn and --tls-crl: need "
        "--tls-client-ca");
  }
  if (options.tls_cert.empty()) {
    if (!options.tls_client_ca.empty()) {
      return InvalidArgumentError(
          "--tls-client-ca: needs --tls-cert and --tls-key");
    }
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl(
      options.tls_client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
      : options.tls_require_client_cert
          ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
          : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  MEGABATCH_ASSIGN_OR_RETURN(std::string cert,
                             ReadTextFile(options.tls_cert, "--tls-cert"));
  MEGABATCH_ASSIGN_OR_RETURN(std::string key,
                             ReadTextFile(options.tls_key, "--tls-key"));
  ssl.pem_key_cert_pairs.push_back({key, cert});
  if (!options.tls_client_ca.empty()) {
    MEGABATCH_ASSIGN_OR_RETURN(
        std::string ca, ReadTextFile(options.tls_client_ca, "--tls-client-ca"));
    ssl.pem_root_certs = ca;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

bool IsLoopbackAddress(const std::string& listen) {
  if (listen.rfind("unix:", 0) == 0) return true;
  const size_t colon = listen.rfind(':');
  std::string host =
      listen.substr(0, colon == std::string::npos ? listen.size() : colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

Result<std::unique_ptr<Coordinator>> Coordinator::Start(
    const CoordinatorOptions& options) {
  if (options.backup_every.count() > 0 && options.backup_dir.empty()) {
    return InvalidArgumentError("--backup-every needs --backup-dir");
  }
  std::unique_ptr<Coordinator> c(new Coordinator());
  auto store = store::SweepStore::Open(options.db_path);
  if (!store.ok()) {
    return Status(store.status().code(), "database " + options.db_path + ": " +
                                             store.status().message());
  }
  c->store_ = std::move(*store);
  c->store_->SetMaxRunningPerOwner(options.max_running_trials_per_owner);
  if (options.max_db_bytes > 0) {
    MEGABATCH_RETURN_IF_ERROR(c->store_->SetMaxBytes(options.max_db_bytes));
  }
  if (!options.auth_file.empty()) {
    if (options.tls_cert.empty() && !options.insecure &&
        !IsLoopbackAddress(options.listen)) {
      return FailedPreconditionError(
          "--listen " + options.listen +
          ": not a loopback address, and without TLS every token would cross "
          "the network in plaintext; give --tls-cert/--tls-key, or --insecure "
          "to accept that");
    }
    MEGABATCH_RETURN_IF_ERROR(
        BootstrapAdminToken(options.db_path, options.auth_file));
    Result<std::unique_ptr<auth::Authenticator>> a = auth::Authenticator::Open(
        options.db_path,
        auth::CertificatePolicy{options.tls_worker_cn, options.tls_crl,
                                options.tls_client_ca});
    if (!a.ok()) return a.status();
    c->auth_ = std::move(*a);
  } else if (!options.insecure && !IsLoopbackAddress(options.listen)) {
    return FailedPreconditionError(
        "--listen " + options.listen +
        ": not a loopback address, and authentication is off; give --auth-file "
        "(and "
        "--tls-cert/--tls-key), or --insecure to let anyone who can reach it "
        "in");
  }
  MEGABATCH_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> creds,
                             ServerCredentials(options));
  std::string metrics_auth;
  if (!options.metrics_auth_file.empty()) {
    MEGABATCH_ASSIGN_OR_RETURN(
        std::string text,
        ReadTextFile(options.metrics_auth_file, "--metrics-auth-file"));
    metrics_auth = text.substr(0, text.find_first_of("\r\n"));
    if (metrics_auth.find(':') == std::string::npos ||
        metrics_auth.front() == ':') {
      return InvalidArgumentError(
          "--metrics-auth-file: " + options.metrics_auth_file +
          " must hold one line user:password");
    }
  }
  c->results_ = std::make_unique<store::ReadOnlyDb>(options.db_path);
  c->metrics_ =
      std::make_unique<metrics::CoordinatorMetrics>(c->results_.get());
  if (!options.metrics_listen.empty()) {
    MEGABATCH_RETURN_IF_ERROR(
        c->metrics_->Serve(options.metrics_listen, metrics_auth));
  }
  std::string model_dir = options.model_dir;
  if (model_dir.empty() &&
      (options.db_path == ":memory:" || options.db_path.empty())) {
    std::string name =
        (std::filesystem::temp_directory_path() / "megabatch-models-XXXXXX")
            .string();
    if (::mkdtemp(name.data()) == nullptr) {
      return InternalError("model store: mkdtemp " + name + ": " +
                           std::strerror(errno));
    }
    model_dir = name;
    c->temp_model_dir_ = name;  // goes with the in-memory database
  } else if (model_dir.empty()) {
    model_dir = options.db_path + "-models";
  }
  MEGABATCH_ASSIGN_OR_RETURN(
      c->models_, store::ModelStore::Open(model_dir, options.model_max_bytes));
  scheduler::SchedulerOptions scheduler_options = options.scheduler;
  scheduler_options.models = c->models_.get();
  metrics::CoordinatorMetrics* m = c->metrics_.get();
  scheduler_options.on_dispatch = [m](double seconds) {
    m->ObserveDispatch(seconds);
  };
  c->scheduler_ = std::make_unique<scheduler::Scheduler>(c->store_.get(),
                                                         scheduler_options);
  scheduler::SubmitPolicy admin_policy;
  admin_policy.max_model_parameters = options.max_model_parameters;
  admin_policy.data_roots = options.data_roots;
  scheduler::SubmitPolicy user_policy = admin_policy;
  user_policy.max_priority = options.max_user_priority;
  user_policy.max_pending_trials = options.max_pending_trials_per_owner;
  c->sweep_service_ = std::make_unique<service::SweepServiceImpl>(
      c->store_.get(), c->scheduler_.get(), c->results_.get(), m,
      c->auth_.get(), user_policy, admin_policy);
  c->worker_service_ = std::make_unique<service::WorkerServiceImpl>(
      c->store_.get(), c->scheduler_.get(), m, c->auth_.get(),
      options.max_points_per_second);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Reflection answers anyone (a stream and a thread each): only where
  // everyone may call anyway.
  if (!options.auth_file.empty()) {
    builder.SetOption(std::make_unique<WithoutReflection>());
  }
  builder.AddListeningPort(options.listen, creds, &c->port_);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  grpc::ResourceQuota quota("megabatch-coordinator");
  quota.SetMaxThreads(options.max_rpc_threads);
  builder.SetResourceQuota(quota);

  builder.RegisterService(c->sweep_service_.get());
  builder.RegisterService(c->worker_service_.get());
  c->server_ = builder.BuildAndStart();
  if (!c->server_ || c->port_ == 0) {
    return UnavailableError("cannot listen on " + options.listen);
  }
  // Health per service as well as for the whole server ("").
  for (const char* name : kHealthServices) {
    c->server_->GetHealthCheckService()->SetServingStatus(name, true);
  }
  if (options.backup_every.count() > 0) {
    c->backup_thread_ = std::thread(&Coordinator::BackupLoop, c.get(),
                                    options.db_path, options.backup_dir,
                                    options.backup_every, options.backup_keep);
  }
  return c;
}

void Coordinator::BackupLoop(std::string db_path, std::string dir,
                             std::chrono::seconds every, int keep) {
  MutexLock lock(&backup_mu_);
  auto next = std::chrono::steady_clock::now() + every;
  while (!stopping_) {
    if (backup_cv_.WaitUntil(next) || stopping_) continue;
    next = std::max(next + every, std::chrono::steady_clock::now());
    lock.Unlock();
    Result<std::string> written =
        store::BackupIntoDirectory(db_path, dir, keep);
    if (written.ok()) {
      spdlog::info("backup written: {}", *written);
    } else {
      spdlog::error("backup into {} failed: {}", dir,
                    written.status().ToString());
    }
    metrics_->RecordBackup(written.ok(), scheduler::NowSeconds());
    lock.Lock();
  }
}

Coordinator::~Coordinator() {
  Shutdown();
  if (!temp_model_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(temp_model_dir_, ec);
  }
}

std::shared_ptr<grpc::Channel> Coordinator::InProcessChannel() {
  return server_->InProcessChannel(grpc::ChannelArguments());
}

void Coordinator::Shutdown() {
  // NOT_SERVING first, so that health checks see the shutdown before the
  // drain (a Watch gets the change at once).
  const auto health_down = std::chrono::steady_clock::now();
  if (server_ && server_->GetHealthCheckService() != nullptr) {
    server_->GetHealthCheckService()->Shutdown();
  }
  if (scheduler_) scheduler_->Stop();
  {
    MutexLock lock(&backup_mu_);
    stopping_ = true;
    backup_cv_.SignalAll();
  }
  if (backup_thread_.joinable()) backup_thread_.join();
  // gRPC's health service sends NOT_SERVING to Watch streams from its own
  // thread; a server shutdown that cancels them first loses it (2 in 100
  // shutdowns on a loaded 2-core machine). Give it a moment: a bounded
  // drain, as a load balancer's deregistration delay is.
  std::this_thread::sleep_until(health_down + kHealthDrain);
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(2));
  }
}

void Coordinator::Wait() { server_->Wait(); }

}  // namespace megabatch
