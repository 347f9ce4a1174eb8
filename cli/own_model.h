// What a client does before it submits a sweep of model.type torchscript
// (docs/models.md): the coordinator and its workers never see the user's
// machine, so the client resolves model.path and every data path against
// the spec file's directory, reads each data file once to record its size
// and SHA-256 (and a .npy file's dtype and shape) in dataset.files, checks
// what a file's header and contents can show (dtypes, shapes, counts, NaN,
// negative labels, a token file shorter than one window), and uploads the
// module, naming it in the spec by its hash. LibTorch-free.
#ifndef MEGABATCH_CLI_OWN_MODEL_H_
#define MEGABATCH_CLI_OWN_MODEL_H_

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace megabatch::cli {

// Whether a spec document trains a torchscript model.
bool IsOwnModelSpec(const nlohmann::json& spec);

struct UploadedModel {
  std::string sha256;
  int64_t bytes = 0;
};
// Uploads the module file at `path` (SweepService.UploadModel).
using UploadModelFn = std::function<Result<UploadedModel>(const std::string&)>;

// The spec to submit: `spec` with absolute paths, model.sha256 and
// model.bytes, and dataset.files. Errors name the spec field and the file.
Result<nlohmann::json> PrepareOwnModelSpec(nlohmann::json spec,
                                           const std::filesystem::path& base,
                                           const UploadModelFn& upload);

}  // namespace megabatch::cli

#endif  // MEGABATCH_CLI_OWN_MODEL_H_
