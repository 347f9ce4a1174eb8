// The trainer's side of the tiny_bert tokenizer: runs megabatch-tokenize
// (see tokenizer.h for why in another process) and reads the token ids it
// caches. LibTorch-free.
#ifndef MEGABATCH_WORKER_TRAINER_DATA_TOKENIZE_CLIENT_H_
#define MEGABATCH_WORKER_TRAINER_DATA_TOKENIZE_CLIENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/trainer/trial_config.h"

namespace megabatch::trainer {

struct TokenIds {
  std::vector<int32_t> train,
      validation;  // documents, each ended by the separator
  int vocab_size = 0;
  std::string model_path;
};

// The tokenization of config's corpus (dataset.path, validation_fraction,
// model.vocab_size, dataset.cache_dir). megabatch-tokenize is looked for in
// $MEGABATCH_TOKENIZE, then beside this executable, then on PATH. Its errors
// come back with their codes; a missing tool is FAILED_PRECONDITION.
Result<TokenIds> LoadTokenIds(const TrialConfig& config);

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_DATA_TOKENIZE_CLIENT_H_
