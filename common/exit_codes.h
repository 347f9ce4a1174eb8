// Every megabatch binary's exit codes (docs/design.md, "Public interfaces"):
// 0 it worked, 1 the operation (or the watched sweep) failed, 2 bad usage.
// megabatch-trainer adds 3, diverged (common/trainer_protocol.h).
// Header-only.
#ifndef MEGABATCH_COMMON_EXIT_CODES_H_
#define MEGABATCH_COMMON_EXIT_CODES_H_

namespace megabatch {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_EXIT_CODES_H_
