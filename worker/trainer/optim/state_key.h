// The key of a parameter's entry in torch::optim::Optimizer's state_: the
// address of its TensorImpl, written as a string up to LibTorch 2.0 (what
// c10::guts::to_string gave; Debian's 1.13) and the pointer itself since.
// One call serves both.
#ifndef MEGABATCH_WORKER_TRAINER_OPTIM_STATE_KEY_H_
#define MEGABATCH_WORKER_TRAINER_OPTIM_STATE_KEY_H_

#include <torch/torch.h>

#include <sstream>
#include <string>
#include <type_traits>

namespace megabatch::optim {

template <typename StateMap>
typename StateMap::key_type StateKey(const StateMap& /*state*/,
                                     const torch::Tensor& p) {
  if constexpr (std::is_same_v<typename StateMap::key_type, std::string>) {
    std::ostringstream key;
    key << p.unsafeGetTensorImpl();
    return key.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

}  // namespace megabatch::optim

#endif  // MEGABATCH_WORKER_TRAINER_OPTIM_STATE_KEY_H_
