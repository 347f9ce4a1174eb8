// Small helpers the ingest benchmark's figures share.
#ifndef MEGABATCH_BENCH_BENCH_UTIL_H_
#define MEGABATCH_BENCH_BENCH_UTIL_H_

#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace megabatch::bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// The q-quantile of `v` (0 when it is empty).
inline double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

// A number from /proc/PID/status ("VmRSS" in KiB, "Threads"); -1 if absent.
inline double StatusField(pid_t pid, const std::string& key) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(key + ":", 0) == 0)
      return std::atof(line.c_str() + key.size() + 1);
  }
  return -1;
}

}  // namespace megabatch::bench

#endif  // MEGABATCH_BENCH_BENCH_UTIL_H_
