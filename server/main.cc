// megabatch-coordinator: owns all sweep state and serves the gRPC API.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <pthread.h>

#include <csignal>

#include "server/coordinator.h"

int main(int argc, char** argv) {
  CLI::App app{"megabatch-coordinator: schedules large-batch sweeps onto workers"};
  megabatch::CoordinatorOptions options;
  options.metrics_listen = "127.0.0.1:9464";
  int heartbeat_ms = 1000, lease_timeout_ms = 10000;
  app.add_option("--listen", options.listen, "gRPC listen address")
      ->capture_default_str();
  app.add_option("--db", options.db_path, "SQLite results database file")
      ->capture_default_str();
  app.add_option("--metrics-listen", options.metrics_listen,
                 "Prometheus /metrics address (port 0: any free port; empty: off)")
      ->capture_default_str();
  app.add_option("--artifacts", options.scheduler.artifacts_dir,
                 "checkpoint directory every worker can reach (shared storage)");
  app.add_option("--heartbeat-interval-ms", heartbeat_ms,
                 "how often workers heartbeat")
      ->capture_default_str()
      ->check(CLI::Range(50, 600000));
  app.add_option("--lease-timeout-ms", lease_timeout_ms,
                 "silence after which a worker's trials are requeued")
      ->capture_default_str()
      ->check(CLI::Range(100, 3600000));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;  // 2: usage error (DESIGN.md)
  }
  // Logs go to stderr; stdout stays for data (DESIGN.md).
  spdlog::set_default_logger(spdlog::stderr_color_mt("megabatch-coordinator"));
  options.scheduler.heartbeat_interval = std::chrono::milliseconds(heartbeat_ms);
  options.scheduler.lease_timeout = std::chrono::milliseconds(lease_timeout_ms);

  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  try {
    auto coordinator = megabatch::Coordinator::Start(options);
    if (!coordinator.ok()) {
      spdlog::error("{}", coordinator.status().ToString());
      return 1;
    }
    spdlog::info("megabatch-coordinator listening on port {} (database {})",
                 (*coordinator)->port(), options.db_path);
    if ((*coordinator)->metrics_port() != 0) {
      spdlog::info("metrics on port {} at /metrics", (*coordinator)->metrics_port());
    }
    int signal = 0;
    sigwait(&stop_signals, &signal);
    spdlog::info("signal {}: shutting down", signal);
    (*coordinator)->Shutdown();
  } catch (const std::exception& e) {
    spdlog::error("fatal: {}", e.what());
    return 1;
  }
  return 0;
}
