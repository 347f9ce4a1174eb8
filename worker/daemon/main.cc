// megabatch-worker: registers this machine's slots with the coordinator and
// runs leased trials in one megabatch-trainer per slot, kept warm between
// trials.
#include <pthread.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <thread>

#include "common/channel.h"
#include "common/datasets.h"
#include "common/exit_codes.h"
#include "worker/daemon/check.h"
#include "worker/daemon/data_roots.h"
#include "worker/daemon/private_files.h"
#include "worker/daemon/worker.h"

int main(int argc, char** argv) {
  CLI::App app{"megabatch-worker: runs megabatch trials on this machine"};
  std::string coordinator = "127.0.0.1:50051";
  megabatch::worker::WorkerOptions options;
  char host[256] = "worker";
  gethostname(host, sizeof(host) - 1);
  options.name = host;
  int threads = 0;
  app.add_option("--coordinator", coordinator, "coordinator address")
      ->capture_default_str();
  app.add_option("--name", options.name,
                 "worker name shown in `megabatch workers`")
      ->capture_default_str();
  auto* slots =
      app.add_option("--slots", options.slots, "trials run at once (CPU slots)")
          ->capture_default_str()
          ->check(CLI::Range(1, 4096));
  app.add_option("--gpus", options.gpus,
                 "GPU ids, one slot each, e.g. 0,1 (a trainer sees only its "
                 "slot's GPU)")
      ->delimiter(',')
      ->excludes(slots);
  app.add_option(
         "--threads-per-slot", threads,
         "intra-op threads per trainer (default: the cores other megabatch "
         "workers on this host left, divided among the slots)")
      ->check(CLI::Range(1, megabatch::worker::kMaxThreads));
  std::string claims_dir = megabatch::worker::DefaultRuntimeDir() + "/cores";
  app.add_option("--host-claims", claims_dir,
                 "directory where this user's megabatch workers on this host "
                 "claim its cores; owned by this user, not writable by "
                 "others (empty: claim nothing, see no one)")
      ->capture_default_str();
  app.add_option("--work-dir", options.work_dir,
                 "per-trial directories; owned by this user, not writable by "
                 "others (default: a new private temp dir)");
  app.add_option(
      "--artifacts", options.artifacts_dir,
      "shared checkpoint directory (default: the coordinator's --artifacts)");
  app.add_option("--trainer", options.trainer_path,
                 "megabatch-trainer binary (default: next to this binary)");
  options.data_roots = megabatch::DefaultDataRoots();
  app.add_option("--data-root", options.data_roots,
                 "a directory whose regular files trials may read as "
                 "dataset.path (repeat for more; given, it replaces the "
                 "default)")
      ->capture_default_str();
  app.add_option("--model-cache", options.model_cache_dir,
                 "where TorchScript models fetched from the coordinator are "
                 "kept (default: models/ in the trainer's cache directory)");
  app.add_option("--trainer-memory", options.trainer_memory,
                 "limit each trainer's memory (heap and private mappings) to "
                 "this many bytes, e.g. 16G (default: no limit)")
      ->transform(CLI::AsSizeValue(false));
  std::string rendezvous_ports = "29500-29599";
  app.add_option("--rendezvous-host", options.rendezvous_host,
                 "address other workers reach this machine at, for "
                 "data-parallel trials "
                 "whose rank 0 runs here")
      ->capture_default_str();
  app.add_option("--rendezvous-ports", rendezvous_ports,
                 "ports FIRST-LAST those rendezvous may use (open them between "
                 "workers)")
      ->capture_default_str();
  std::string token_file;
  megabatch::ChannelOptions channel_options;
  app.add_option("--token-file", token_file,
                 "file holding a worker token (default: $MEGABATCH_TOKEN)");
  app.add_option("--tls-ca", channel_options.tls_ca_file,
                 "CA certificate (PEM) of a TLS coordinator");
  app.add_option("--tls-cert", channel_options.tls_cert_file,
                 "client certificate (PEM) to present to the coordinator");
  app.add_option("--tls-key", channel_options.tls_key_file,
                 "its private key (PEM)");
  bool fresh_trainers = false;
  app.add_flag(
      "--fresh-trainers", fresh_trainers,
      "start a new trainer process for every trial (default: a slot keeps its "
      "trainer between trials of one sweep)");
  int64_t exit_when_idle = 0;
  app.add_option("--exit-when-idle", exit_when_idle,
                 "exit once no slot has held a trial for this many seconds "
                 "(a pilot job gives its node back; default 0: never)")
      ->check(CLI::NonNegativeNumber);
  int64_t drain_seconds = 30;
  app.add_option("--drain-seconds", drain_seconds,
                 "on SIGTERM or SIGINT, this long for running trials to "
                 "checkpoint and be given back (requeued at once, no retry "
                 "counted) before their trainers are killed; a second signal "
                 "stops at once (0: stop at once)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  bool check = false;
  app.add_flag("--check", check,
               "check this machine (trainer, devices, coordinator, "
               "directories) and exit: "
               "0 if trials can run here, 1 with the problems otherwise");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;  // 2: usage error, as for every megabatch command
  }
  // Logs go to stderr; stdout stays for data.
  spdlog::set_default_logger(spdlog::stderr_color_mt("megabatch-worker"));

  namespace fs = std::filesystem;
  for (const auto& gpu : options.gpus) {
    if (gpu.empty() ||
        gpu.find_first_not_of("0123456789") != std::string::npos) {
      spdlog::error("--gpus: '{}' is not a GPU id (a non-negative integer)",
                    gpu);
      return megabatch::kExitUsage;
    }
  }
  if (!options.gpus.empty())
    options.slots = static_cast<int>(options.gpus.size());
  {
    int first = 0, last = 0;
    char dash = 0;
    std::istringstream range(rendezvous_ports);
    if (!(range >> first >> dash >> last) || dash != '-' || !range.eof() ||
        first < 1 || last < first || last > 65535) {
      spdlog::error("--rendezvous-ports: '{}' is not a port range FIRST-LAST",
                    rendezvous_ports);
      return megabatch::kExitUsage;
    }
    options.rendezvous_port_first = first;
    options.rendezvous_port_count = last - first + 1;
  }
  if (options.trainer_path.empty()) {
    options.trainer_path =
        (fs::read_symlink("/proc/self/exe").parent_path() / "megabatch-trainer")
            .string();
  }
  if (access(options.trainer_path.c_str(), X_OK) != 0) {
    spdlog::error("--trainer: {} is not an executable file",
                  options.trainer_path);
    return megabatch::kExitUsage;
  }
  // The work dir holds each trial's config: no other local user may plant
  // or redirect a file in it.
  if (options.work_dir.empty()) {
    auto made = megabatch::worker::MakePrivateTempDir(
        fs::temp_directory_path().string(), "megabatch-worker-");
    if (!made.ok()) {
      spdlog::error("--work-dir: {}", made.status().message());
      return megabatch::kExitUsage;
    }
    options.work_dir = *made;
  } else if (auto s = megabatch::worker::EnsurePrivateDir(options.work_dir);
             !s.ok()) {
    spdlog::error("--work-dir: {}", s.message());
    return megabatch::kExitUsage;
  }
  // Cores are given out once per host: the other workers' claims are
  // subtracted before this worker sizes its threads.
  options.host_cores = megabatch::worker::UsableCores();
  int claimed_by_others = 0;
  if (!claims_dir.empty() && !check) {
    auto claims = megabatch::worker::HostClaims::Open(claims_dir);
    if (claims.ok()) {
      options.host_claims = std::move(*claims);
      claimed_by_others = options.host_claims->Read().others_capacity;
    } else {
      spdlog::warn(
          "{}; threads are sized as if this worker were alone on the host",
          claims.status().message());
    }
  }
  auto plan = megabatch::worker::PlanThreads(options.host_cores, options.slots,
                                             threads, claimed_by_others);
  options.threads_per_slot = plan.threads_per_slot;
  if (plan.oversubscribed) spdlog::warn("OVERSUBSCRIBED: {}", plan.warning);
  if (options.host_claims) {
    auto published =
        options.host_claims->Publish(options.slots * options.threads_per_slot);
    if (!published.ok()) spdlog::warn("{}", published.message());
  }

  options.warm_trainers = !fresh_trainers;
  // A trainer that dies while the worker writes it a request is EPIPE, not
  // the end of the worker.
  std::signal(SIGPIPE, SIG_IGN);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // After the mask: gRPC starts threads of its own with the channel, and
  // they must not take the stop signals either.
  // Reconnect within 100 ms to 2 s of the coordinator coming (back) up, not
  // gRPC's default 1 s to 120 s: a worker started beside its coordinator, or
  // outliving its restart, is leasing again at once. gRPC 1.51 also takes
  // the "min reconnect backoff" as each connection attempt's minimum time to
  // complete: at 100 ms, handshakes with a coordinator just restarted on a
  // busy host were cut off again and again (seen for over 10 s, longer than
  // a lease), so it is 5 s.
  grpc::ChannelArguments channel_args;
  channel_args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  channel_args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5000);
  channel_args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  auto channel = megabatch::MakeChannelWithTokenFile(
      coordinator, token_file, channel_options, channel_args);
  if (!channel.ok()) {
    spdlog::error("{}", channel.status().message());
    return megabatch::kExitUsage;
  }

  if (check) {
    megabatch::worker::CheckOptions c;
    c.trainer_path = options.trainer_path;
    c.threads = options.threads_per_slot;
    c.coordinator = coordinator;
    c.channel = *channel;
    c.work_dir = options.work_dir;
    c.artifacts_dir = options.artifacts_dir;
    return megabatch::worker::RunCheck(c, std::cout);
  }
  try {
    options.exit_when_idle = std::chrono::seconds(exit_when_idle);
    megabatch::worker::Worker worker(*channel, options);
    // The first SIGTERM or SIGINT drains; a second one stops at once, unless
    // it comes within 2 s of the first (Slurm may deliver one signal twice:
    // from slurmd and forwarded by srun).
    std::atomic<bool> exiting{false};
    std::thread signals([&] {
      int signal = 0;
      sigwait(&stop_signals, &signal);
      if (exiting) return;
      if (drain_seconds > 0) {
        spdlog::info("signal {}: draining (--drain-seconds {})", signal,
                     drain_seconds);
        const auto first = std::chrono::steady_clock::now();
        worker.Drain(std::chrono::seconds(drain_seconds));
        do {
          sigwait(&stop_signals, &signal);
          if (exiting) return;
        } while (std::chrono::steady_clock::now() - first <
                 std::chrono::seconds(2));
      }
      spdlog::info("signal {}: stopping", signal);
      worker.Stop();
    });
    spdlog::info("megabatch-worker '{}': {} {} slots x {} threads, trainer {}",
                 options.name, options.slots,
                 options.gpus.empty() ? "CPU" : "GPU", options.threads_per_slot,
                 options.trainer_path);
    megabatch::Status s = worker.Run();
    // Run() may end by itself (a drain, --exit-when-idle): wake the signal
    // thread so it ends before the worker goes.
    exiting = true;
    pthread_kill(signals.native_handle(), SIGTERM);
    signals.join();
    if (!s.ok()) {
      spdlog::error("{}", s.ToString());
      return 1;
    }
  } catch (const std::exception& e) {
    spdlog::error("fatal: {}", e.what());
    return 1;
  }
  return 0;
}
