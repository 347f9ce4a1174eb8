// megabatch: the command-line client of a megabatch coordinator.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/commands.h"
#include "common/channel.h"

int main(int argc, char** argv) {
  using megabatch::cli::OutputFormat;
  CLI::App app{"megabatch: large-batch training studies"};
  app.require_subcommand(1);
  std::string server = "127.0.0.1:50051";
  std::string output = "table";
  app.add_option("--server", server, "coordinator address")
      ->capture_default_str();
  std::string token_file;
  megabatch::ChannelOptions channel_options;
  app.add_option("--token-file", token_file,
                 "file holding an access token (default: $MEGABATCH_TOKEN)");
  app.add_option("--tls-ca", channel_options.tls_ca_file,
                 "CA certificate (PEM) of a TLS coordinator");
  app.add_option("-o,--output", output, "output format")
      ->check(CLI::IsMember({"table", "json", "csv", "md"}))
      ->capture_default_str();

  std::string spec_path, request_id;
  bool wait = false;
  int64_t sweep_id = 0;
  auto* submit =
      app.add_subcommand("submit", "submit a sweep spec (YAML or JSON)");
  submit->add_option("spec", spec_path, "SPEC.yaml or SPEC.json")->required();
  submit->add_flag("--wait", wait, "watch the sweep until it ends");
  submit->add_option("--request-id", request_id,
                     "idempotency key: resubmitting it returns the same sweep");
  auto* list = app.add_subcommand("list", "list sweeps");
  auto add_sweep_command = [&](const char* name, const char* help) {
    auto* cmd = app.add_subcommand(name, help);
    cmd->add_option("sweep", sweep_id, "sweep id")
        ->required()
        ->check(CLI::PositiveNumber);
    return cmd;
  };
  auto* status = add_sweep_command("status", "show one sweep");
  auto* trials = add_sweep_command("trials", "list a sweep's trials");
  auto* watch = add_sweep_command("watch",
                                  "follow a sweep until it ends (exit 1 if it "
                                  "failed or was cancelled)");
  auto* cancel = add_sweep_command("cancel", "cancel a sweep's trials");
  auto* workers = app.add_subcommand("workers", "list workers");
  std::string sql;
  int64_t max_rows = 0;
  int32_t timeout_ms = 0;
  auto* query =
      app.add_subcommand("query", "read-only SQL on the results database");
  query->add_option("sql", sql, "one SELECT statement")->required();
  query->add_option("--max-rows", max_rows, "row cap (default 10000)")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  query->add_option("--timeout-ms", timeout_ms, "time cap (default 10000)")
      ->check(CLI::Range(1, 300000));
  std::string plot_path;
  auto* report =
      add_sweep_command("report", "the sweep's large-batch analysis");
  report->add_option("--plot", plot_path,
                     "also write the figure as SVG to this file");
  std::vector<std::string> metric_names;
  auto* export_cmd = add_sweep_command(
      "export", "every metric of a sweep: CSV, or JSON lines with -o json");
  export_cmd->add_option("--metric", metric_names,
                         "only this metric (repeatable)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : megabatch::cli::kExitUsage;
  }

  OutputFormat format = output == "json"  ? OutputFormat::kJson
                        : output == "csv" ? OutputFormat::kCsv
                        : output == "md"  ? OutputFormat::kMarkdown
                                          : OutputFormat::kTable;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64
                                << 20);  // query results up to the server's cap
  auto channel = megabatch::MakeChannelWithTokenFile(server, token_file,
                                                     channel_options, args);
  if (!channel.ok()) {
    std::cerr << channel.status().message() << "\n";
    return megabatch::cli::kExitUsage;
  }
  auto stub = megabatch::v1::SweepService::NewStub(*channel);
  megabatch::cli::Commands commands(stub.get(), format, std::cout, std::cerr);
  if (*submit) return commands.Submit(spec_path, request_id, wait);
  if (*list) return commands.List();
  if (*status) return commands.Status(sweep_id);
  if (*trials) return commands.Trials(sweep_id);
  if (*watch) return commands.Watch(sweep_id);
  if (*cancel) return commands.Cancel(sweep_id);
  if (*workers) return commands.Workers();
  if (*query) return commands.Query(sql, max_rows, timeout_ms);
  if (*report) return commands.Report(sweep_id, plot_path);
  if (*export_cmd) return commands.Export(sweep_id, metric_names);
  return megabatch::cli::kExitUsage;
}
