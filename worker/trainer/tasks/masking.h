// BERT's masking rule for masked-language modelling.
#ifndef MEGABATCH_WORKER_TRAINER_TASKS_MASKING_H_
#define MEGABATCH_WORKER_TRAINER_TASKS_MASKING_H_

#include <torch/torch.h>

namespace megabatch::trainer {

struct MaskingRule {
  double rate = 0.15;   // of the ordinary tokens, chosen for prediction
  int64_t mask_id = 0;  // what 80% of the chosen become
  int64_t first_ordinary =
      0;              // ids below are special: never chosen, never drawn
  int64_t vocab = 0;  // 10% of the chosen become a random ordinary id
};

struct MaskedTokens {
  torch::Tensor inputs;  // [N, L] int64: the tokens with the rule applied
  torch::Tensor chosen;  // [N, L] bool: the positions to predict
};

// Chooses each ordinary token of `tokens` ([N, L] int64, CPU) with
// probability rule.rate; a chosen token becomes mask_id with probability
// 0.8, a uniformly random ordinary id with 0.1, and stays with 0.1. Every
// draw comes from `generator`, three per position, so the result depends on
// the generator's state and the shape alone.
MaskedTokens MaskTokens(const torch::Tensor& tokens, const MaskingRule& rule,
                        at::Generator& generator);

// A generator for the draws of optimizer step `step` of a trial with `seed`.
at::Generator StepGenerator(int64_t seed, int64_t step);

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_TASKS_MASKING_H_
