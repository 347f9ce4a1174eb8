// The megabatch CLI's commands over SweepService. Each returns the process
// exit code: 0 ok, 1 the operation (or the watched sweep) failed, 2 usage.
// Data goes to `out`, progress and errors to `err`.
#ifndef MEGABATCH_CLI_COMMANDS_H_
#define MEGABATCH_CLI_COMMANDS_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "cli/own_model.h"
#include "cli/table.h"
#include "common/exit_codes.h"
#include "megabatch/v1/megabatch.grpc.pb.h"

namespace megabatch::cli {

using megabatch::kExitFailed;  // common/exit_codes.h
using megabatch::kExitOk;
using megabatch::kExitUsage;

// Thread-compatible. The stub and streams must outlive the Commands.
class Commands {
 public:
  Commands(v1::SweepService::StubInterface* stub, OutputFormat format,
           std::ostream& out, std::ostream& err)
      : stub_(stub), format_(format), out_(out), err_(err) {}

  int Submit(const std::string& spec_path, const std::string& request_id,
             bool wait);
  int List();
  int Status(int64_t sweep_id);
  int Trials(int64_t sweep_id);
  int Workers();
  int Watch(int64_t sweep_id);
  int Cancel(int64_t sweep_id);
  // Prints the rows; a capped result also says so on `err`.
  int Query(const std::string& sql, int64_t max_rows, int32_t timeout_ms);
  // The large-batch report; with a non-empty `plot_path` also writes the
  // figure there as SVG.
  int Report(int64_t sweep_id, const std::string& plot_path);
  // Every metric of the sweep, streamed: CSV, or JSON lines with -o json.
  int Export(int64_t sweep_id, const std::vector<std::string>& names);

 private:
  // Streams a TorchScript module to the coordinator (UploadModel).
  Result<UploadedModel> UploadModel(const std::string& path);
  // Prints a failed RPC as "megabatch: CODE: message"; returns kExitFailed.
  int Fail(const grpc::Status& s);
  void PrintSweeps(const google::protobuf::RepeatedPtrField<v1::Sweep>& sweeps);
  // Every trial of the sweep, page by page.
  grpc::Status AllTrials(int64_t sweep_id,
                         google::protobuf::RepeatedPtrField<v1::Trial>* trials);

  v1::SweepService::StubInterface* stub_;
  OutputFormat format_;
  std::ostream& out_;
  std::ostream& err_;
};

}  // namespace megabatch::cli

#endif  // MEGABATCH_CLI_COMMANDS_H_
