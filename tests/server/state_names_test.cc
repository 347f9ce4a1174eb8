// The state names: the store's table (what the database holds, the exporter
// labels and the CLI prints) and the proto's enums (what clients read) name
// the same states the same way, and convert.cc maps each onto its own.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>

#include "server/service/convert.h"
#include "server/store/sweep_store.h"

namespace megabatch {
namespace {

std::string Lower(std::string s, size_t prefix) {
  s = s.substr(prefix);
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return s;
}

TEST(StateNamesTest, TheStoreAndTheProtoNameEveryStateAlike) {
  for (const auto& [state, name] : store::kTrialStateNames) {
    EXPECT_EQ(Lower(v1::TrialState_Name(service::ToProto(state)),
                    sizeof("TRIAL_STATE_") - 1),
              name);
    EXPECT_EQ(store::ParseTrialState(name), state);
  }
  // Every proto state but UNSPECIFIED is a store state.
  EXPECT_EQ(
      std::size(store::kTrialStateNames),
      static_cast<size_t>(v1::TrialState_descriptor()->value_count() - 1));
  for (const auto& [state, name] : store::kSweepStateNames) {
    EXPECT_EQ(Lower(v1::SweepState_Name(service::ToProto(state)),
                    sizeof("SWEEP_STATE_") - 1),
              name);
    EXPECT_EQ(store::ParseSweepState(name), state);
  }
  EXPECT_EQ(
      std::size(store::kSweepStateNames),
      static_cast<size_t>(v1::SweepState_descriptor()->value_count() - 1));
}

}  // namespace
}  // namespace megabatch
