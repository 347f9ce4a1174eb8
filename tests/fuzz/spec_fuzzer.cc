// libFuzzer target: the sweep spec parser (YAML or JSON, any bytes). Beyond
// "no crash, no sanitizer report": a grid spec that parses must expand within
// the trial limit, an adaptive one to no trials and a plan that starts with
// exactly one probe, and its JSON form must parse back to the same JSON.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server/planner/adaptive.h"
#include "server/spec/sweep_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace megabatch::spec;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto spec = ParseSweepSpec(text, SpecFormat::kAuto);
  if (!spec.ok()) {
    if (spec.status().message().empty()) std::abort();  // errors must say why
    return 0;
  }
  auto trials = ExpandSweep(*spec);
  if (spec->strategy.is_null()) {
    if (trials.empty() ||
        trials.size() > static_cast<size_t>(kMaxTrialsPerSweep))
      std::abort();
  } else {
    if (!trials.empty()) std::abort();
    auto plan = megabatch::planner::PlanAdaptive(*spec, {}, 0);
    if (plan.trials.size() != 1 ||
        plan.phases[0] != megabatch::planner::kPhaseProbe) {
      std::abort();
    }
  }
  const std::string json = spec->ToJson().dump();
  auto again = ParseSweepSpec(json, SpecFormat::kJson);
  if (!again.ok() || again->ToJson().dump() != json) std::abort();
  return 0;
}
