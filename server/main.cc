// megabatch-coordinator: owns all sweep state and serves the gRPC API.
#include <pthread.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>

#include "common/exit_codes.h"
#include "server/auth/auth.h"
#include "server/auth/token_store.h"
#include "server/coordinator.h"
#include "server/store/backup.h"

namespace {

// Every worker holds a connection, a file descriptor: the soft limit on open
// files goes up to the hard one (systemd's default soft limit, 1,024, would
// refuse connections near a thousand workers).
void RaiseOpenFileLimit() {
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) != 0) return;
  const rlim_t want = std::min<rlim_t>(files.rlim_max, rlim_t{1} << 20);
  if (files.rlim_cur >= want) return;
  const rlim_t was = files.rlim_cur;
  files.rlim_cur = want;
  if (setrlimit(RLIMIT_NOFILE, &files) == 0) {
    spdlog::info("open-file limit raised from {} to {}", was, want);
  }
}

// `megabatch-coordinator token ...`: manages the access tokens in the
// database directly (on the coordinator's host; the coordinator may be
// running). Returns the exit code.
int RunTokenCommand(const std::string& db_path, const std::string& command,
                    const std::string& role, const std::string& name,
                    int64_t id) {
  using megabatch::Status;
  // Opening the store first creates or migrates the database.
  auto store = megabatch::store::SweepStore::Open(db_path);
  auto tokens = store.ok() ? megabatch::auth::TokenStore::Open(db_path)
                           : decltype(megabatch::auth::TokenStore::Open(
                                 db_path))(store.status());
  if (!tokens.ok()) {
    std::fprintf(stderr, "database %s: %s\n", db_path.c_str(),
                 tokens.status().ToString().c_str());
    return megabatch::kExitFailed;
  }
  const double now = megabatch::scheduler::NowSeconds();
  if (command == "create") {
    auto token = megabatch::auth::NewToken();
    auto created =
        token.ok() ? (*tokens)->Create(name, role,
                                       megabatch::auth::Sha256Hex(*token), now)
                   : megabatch::Result<int64_t>(token.status());
    if (!created.ok()) {
      std::fprintf(stderr, "token create: %s\n",
                   created.status().ToString().c_str());
      return megabatch::kExitFailed;
    }
    // The only time the token is shown: the database keeps its hash.
    std::printf("%s\n", token->c_str());
    std::fprintf(stderr,
                 "token %lld '%s' (%s) created; it is not shown again\n",
                 static_cast<long long>(*created), name.c_str(), role.c_str());
    return 0;
  }
  if (command == "list") {
    auto rows = (*tokens)->List();
    if (!rows.ok()) {
      std::fprintf(stderr, "token list: %s\n",
                   rows.status().ToString().c_str());
      return megabatch::kExitFailed;
    }
    std::printf("%-6s %-24s %-7s %-20s %s\n", "ID", "NAME", "ROLE", "CREATED",
                "STATE");
    for (const auto& t : *rows) {
      std::printf("%-6lld %-24s %-7s %-20.0f %s\n",
                  static_cast<long long>(t.id), t.name.c_str(), t.role.c_str(),
                  t.created_at, t.revoked_at > 0 ? "revoked" : "active");
    }
    return 0;
  }
  Status revoked = (*tokens)->Revoke(id, now);
  if (!revoked.ok()) {
    std::fprintf(stderr, "token revoke: %s\n", revoked.ToString().c_str());
    return megabatch::kExitFailed;
  }
  std::fprintf(stderr, "token %lld revoked\n", static_cast<long long>(id));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "megabatch-coordinator: schedules large-batch sweeps onto workers"};
  megabatch::CoordinatorOptions options;
  options.metrics_listen = "127.0.0.1:9464";
  int heartbeat_ms = 1000, lease_timeout_ms = 10000;
  app.add_option("--listen", options.listen, "gRPC listen address")
      ->capture_default_str();
  app.add_option("--db", options.db_path, "SQLite results database file")
      ->capture_default_str();
  app.add_option(
         "--metrics-listen", options.metrics_listen,
         "Prometheus /metrics address (port 0: any free port; empty: off)")
      ->capture_default_str();
  app.add_option(
      "--artifacts", options.scheduler.artifacts_dir,
      "checkpoint directory every worker can reach (shared storage)");
  app.add_option("--heartbeat-interval-ms", heartbeat_ms,
                 "how often workers heartbeat")
      ->capture_default_str()
      ->check(CLI::Range(50, 600000));
  app.add_option("--lease-timeout-ms", lease_timeout_ms,
                 "silence after which a worker's trials are requeued")
      ->capture_default_str()
      ->check(CLI::Range(100, 3600000));
  app.add_option(
      "--auth-file", options.auth_file,
      "turn on token authentication; the admin token lives in this file "
      "(created with a new token when absent)");
  app.add_option("--max-user-priority", options.max_user_priority,
                 "the highest sweep priority a user (not an admin) may set")
      ->capture_default_str();
  app.add_option("--max-pending-trials-per-owner",
                 options.max_pending_trials_per_owner,
                 "the most queued and running trials over all of a user's "
                 "sweeps (0: no limit; admins are not limited)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-running-trials-per-owner",
                 options.max_running_trials_per_owner,
                 "running trials (slots) over all of one owner's sweeps, "
                 "admins' too; past it the owner's queued trials wait while "
                 "others lease (0: no quota)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--model-dir", options.model_dir,
                 "where uploaded TorchScript models are kept (default: "
                 "<db>-models beside the database)");
  app.add_option("--max-model-bytes", options.model_max_bytes,
                 "the largest TorchScript model a user may upload")
      ->capture_default_str();
  app.add_option("--max-model-parameters", options.max_model_parameters,
                 "the largest model anyone may submit, in parameters (0: no "
                 "limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--data-root", options.data_roots,
                 "a directory a spec's dataset.path may name (repeat for "
                 "more; given, it replaces the default)")
      ->capture_default_str();
  app.add_flag("--insecure", options.insecure,
               "allow a non-loopback --listen without authentication, or "
               "with tokens but without TLS");
  app.add_option("--tls-cert", options.tls_cert, "TLS certificate chain (PEM)");
  app.add_option("--tls-key", options.tls_key, "TLS private key (PEM)");
  app.add_option("--tls-client-ca", options.tls_client_ca,
                 "verify client certificates against this CA (PEM)");
  app.add_flag("--tls-require-client-cert", options.tls_require_client_cert,
               "refuse connections without a client certificate the "
               "--tls-client-ca signed");
  app.add_option("--tls-worker-cn", options.tls_worker_cn,
                 "client certificates whose common name matches this regular "
                 "expression are workers and need no token (default: none "
                 "are)");
  app.add_option("--tls-crl", options.tls_crl,
                 "PEM certificate revocation list from the --tls-client-ca; "
                 "read again when it changes");
  app.add_option(
         "--max-points-per-second", options.max_points_per_second,
         "metric points accepted per second from each worker (0: no limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-rpc-threads", options.max_rpc_threads,
                 "threads serving calls; past them a call is "
                 "RESOURCE_EXHAUSTED (workers retry). Long polls hold none")
      ->capture_default_str()
      ->check(CLI::Range(16, 65536));
  app.add_option("--max-db-bytes", options.max_db_bytes,
                 "cap the database file at this many bytes (0: none); past "
                 "it writes are refused as on a full disk and workers retry")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--metrics-auth-file", options.metrics_auth_file,
                 "require HTTP basic auth on /metrics: a file with one "
                 "user:password line");
  int64_t backup_every_s = 0, keep_checkpoints_s = -1;
  app.add_option("--backup-dir", options.backup_dir,
                 "directory for the periodic backups (--backup-every)");
  app.add_option("--backup-every", backup_every_s,
                 "seconds between online backups into --backup-dir (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{366} * 86400));
  app.add_option("--backup-keep", options.backup_keep,
                 "how many periodic backups to keep")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option(
         "--keep-checkpoints-for", keep_checkpoints_s,
         "seconds workers keep older checkpoints so that a restored backup "
         "that old finds one to resume from (default: --backup-every)")
      ->check(CLI::Range(int64_t{0}, int64_t{366} * 86400));

  CLI::App* backup = app.add_subcommand(
      "backup", "write an online backup of --db (the coordinator may run)");
  std::string backup_to;
  backup->add_option("TO", backup_to, "the backup file to create")->required();
  CLI::App* restore = app.add_subcommand(
      "restore",
      "make --db (which must not exist) from a backup, ready to serve");
  std::string restore_from;
  int64_t id_gap = megabatch::store::kRestoreIdGap;
  restore->add_option("BACKUP", restore_from, "a backup file")->required();
  restore
      ->add_option("--id-gap", id_gap,
                   "how far lease, sweep, trial and worker ids jump: more "
                   "than the lost coordinator gave out after the backup")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));

  CLI::App* token = app.add_subcommand("token", "manage access tokens in --db");
  token->require_subcommand(1);
  std::string token_role, token_name;
  int64_t token_id = 0;
  CLI::App* create =
      token->add_subcommand("create", "create a token and print it once");
  create->add_option("--role", token_role, "admin | user | worker")
      ->required()
      ->check(CLI::IsMember({"admin", "user", "worker"}));
  create
      ->add_option("--name", token_name, "who holds it (owner of their sweeps)")
      ->required()
      ->check([](const std::string& n) {
        return n.empty() || n.size() > 200 ? std::string("1 to 200 characters")
                                           : std::string();
      });
  token->add_subcommand("list", "list tokens (never the secrets)");
  CLI::App* revoke = token->add_subcommand("revoke", "revoke a token at once");
  revoke->add_option("ID", token_id, "token id (see token list)")->required();
  // Parent options (--db) are accepted before or after the subcommands.
  for (CLI::App* sub : {token, create, token->get_subcommand("list"), revoke,
                        backup, restore}) {
    sub->fallthrough();
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;  // 2: usage error, as for every megabatch command
  }
  // Logs go to stderr; stdout stays for data.
  spdlog::set_default_logger(spdlog::stderr_color_mt("megabatch-coordinator"));
  if (token->parsed()) {
    for (CLI::App* sub : {create, token->get_subcommand("list"), revoke}) {
      if (sub->parsed()) {
        return RunTokenCommand(options.db_path, sub->get_name(), token_role,
                               token_name, token_id);
      }
    }
  }
  if (backup->parsed()) {
    megabatch::Status written =
        megabatch::store::BackupDatabase(options.db_path, backup_to);
    if (!written.ok()) {
      std::fprintf(stderr, "backup: %s\n", written.ToString().c_str());
      return megabatch::kExitFailed;
    }
    std::fprintf(stderr, "backup of %s written to %s\n",
                 options.db_path.c_str(), backup_to.c_str());
    return 0;
  }
  if (restore->parsed()) {
    megabatch::Result<int> requeued =
        megabatch::store::RestoreDatabase(restore_from, options.db_path, id_gap,
                                          megabatch::scheduler::NowSeconds());
    if (!requeued.ok()) {
      std::fprintf(stderr, "restore: %s\n",
                   requeued.status().ToString().c_str());
      return megabatch::kExitFailed;
    }
    std::fprintf(stderr,
                 "%s restored from %s: %d running trials back in the queue; "
                 "start the coordinator on it\n",
                 options.db_path.c_str(), restore_from.c_str(), *requeued);
    return 0;
  }
  options.backup_every = std::chrono::seconds(backup_every_s);
  options.scheduler.checkpoint_history = std::chrono::seconds(
      keep_checkpoints_s >= 0 ? keep_checkpoints_s : backup_every_s);
  options.scheduler.heartbeat_interval =
      std::chrono::milliseconds(heartbeat_ms);
  options.scheduler.lease_timeout = std::chrono::milliseconds(lease_timeout_ms);

  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  RaiseOpenFileLimit();
  try {
    auto coordinator = megabatch::Coordinator::Start(options);
    if (!coordinator.ok()) {
      spdlog::error("{}", coordinator.status().ToString());
      return megabatch::kExitFailed;
    }
    spdlog::info("megabatch-coordinator listening on port {} (database {})",
                 (*coordinator)->port(), options.db_path);
    if (options.auth_file.empty()) {
      spdlog::warn(
          "authentication is off: anyone who can reach {} may use it{}",
          options.listen,
          options.insecure ? " (--insecure)" : " (loopback only)");
    }
    if (options.tls_cert.empty())
      spdlog::info("plaintext gRPC (no --tls-cert)");
    if ((*coordinator)->metrics_port() != 0) {
      spdlog::info("metrics on port {} at /metrics",
                   (*coordinator)->metrics_port());
    }
    int signal = 0;
    sigwait(&stop_signals, &signal);
    spdlog::info("signal {}: shutting down", signal);
    (*coordinator)->Shutdown();
  } catch (const std::exception& e) {
    spdlog::error("fatal: {}", e.what());
    return megabatch::kExitFailed;
  }
  return 0;
}
