// megabatch: the command-line client of a megabatch coordinator.
#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include <iostream>

#include "cli/commands.h"

int main(int argc, char** argv) {
  using megabatch::cli::OutputFormat;
  CLI::App app{"megabatch: large-batch training studies"};
  app.require_subcommand(1);
  std::string server = "127.0.0.1:50051";
  std::string output = "table";
  app.add_option("--server", server, "coordinator address")->capture_default_str();
  app.add_option("-o,--output", output, "output format")
      ->check(CLI::IsMember({"table", "json", "csv"}))
      ->capture_default_str();

  std::string spec_path, request_id;
  bool wait = false;
  int64_t sweep_id = 0;
  auto* submit = app.add_subcommand("submit", "submit a sweep spec (YAML or JSON)");
  submit->add_option("spec", spec_path, "SPEC.yaml or SPEC.json")->required();
  submit->add_flag("--wait", wait, "watch the sweep until it ends");
  submit->add_option("--request-id", request_id,
                     "idempotency key: resubmitting it returns the same sweep");
  auto* list = app.add_subcommand("list", "list sweeps");
  auto add_sweep_command = [&](const char* name, const char* help) {
    auto* cmd = app.add_subcommand(name, help);
    cmd->add_option("sweep", sweep_id, "sweep id")->required()->check(
        CLI::PositiveNumber);
    return cmd;
  };
  auto* status = add_sweep_command("status", "show one sweep");
  auto* trials = add_sweep_command("trials", "list a sweep's trials");
  auto* watch = add_sweep_command("watch",
                                  "follow a sweep until it ends (exit 1 if it "
                                  "failed or was cancelled)");
  auto* cancel = add_sweep_command("cancel", "cancel a sweep's trials");
  auto* workers = app.add_subcommand("workers", "list workers");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : megabatch::cli::kExitUsage;
  }

  OutputFormat format = output == "json"  ? OutputFormat::kJson
                        : output == "csv" ? OutputFormat::kCsv
                                          : OutputFormat::kTable;
  auto channel = grpc::CreateChannel(server, grpc::InsecureChannelCredentials());
  auto stub = megabatch::v1::SweepService::NewStub(channel);
  megabatch::cli::Commands commands(stub.get(), format, std::cout, std::cerr);
  if (*submit) return commands.Submit(spec_path, request_id, wait);
  if (*list) return commands.List();
  if (*status) return commands.Status(sweep_id);
  if (*trials) return commands.Trials(sweep_id);
  if (*watch) return commands.Watch(sweep_id);
  if (*cancel) return commands.Cancel(sweep_id);
  if (*workers) return commands.Workers();
  return megabatch::cli::kExitUsage;
}
