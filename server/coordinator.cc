#include "server/coordinator.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

namespace megabatch {

namespace {
constexpr int kMaxMessageBytes = 16 << 20;
}  // namespace

Result<std::unique_ptr<Coordinator>> Coordinator::Start(
    const CoordinatorOptions& options) {
  std::unique_ptr<Coordinator> c(new Coordinator());
  auto store = store::SweepStore::Open(options.db_path);
  if (!store.ok()) {
    return Status(store.status().code(),
                  "database " + options.db_path + ": " + store.status().message());
  }
  c->store_ = std::move(*store);
  c->results_ = std::make_unique<store::ReadOnlyDb>(options.db_path);
  c->metrics_ = std::make_unique<metrics::CoordinatorMetrics>(c->results_.get());
  if (!options.metrics_listen.empty()) {
    MEGABATCH_RETURN_IF_ERROR(c->metrics_->Serve(options.metrics_listen));
  }
  scheduler::SchedulerOptions scheduler_options = options.scheduler;
  metrics::CoordinatorMetrics* m = c->metrics_.get();
  scheduler_options.on_dispatch = [m](double seconds) { m->ObserveDispatch(seconds); };
  c->scheduler_ =
      std::make_unique<scheduler::Scheduler>(c->store_.get(), scheduler_options);
  c->sweep_service_ = std::make_unique<service::SweepServiceImpl>(
      c->store_.get(), c->scheduler_.get(), c->results_.get(), m);
  c->worker_service_ = std::make_unique<service::WorkerServiceImpl>(
      c->store_.get(), c->scheduler_.get(), m);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(),
                           &c->port_);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.RegisterService(c->sweep_service_.get());
  builder.RegisterService(c->worker_service_.get());
  c->server_ = builder.BuildAndStart();
  if (!c->server_ || c->port_ == 0) {
    return UnavailableError("cannot listen on " + options.listen);
  }
  return c;
}

Coordinator::~Coordinator() { Shutdown(); }

std::shared_ptr<grpc::Channel> Coordinator::InProcessChannel() {
  return server_->InProcessChannel(grpc::ChannelArguments());
}

void Coordinator::Shutdown() {
  if (scheduler_) scheduler_->Stop();
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(2));
  }
}

void Coordinator::Wait() { server_->Wait(); }

}  // namespace megabatch
