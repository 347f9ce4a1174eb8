// GPU utilisation and memory through NVML, loaded at run time (dlopen of
// libnvidia-ml.so.1) so the worker builds and runs without it: on a machine
// without an NVIDIA driver Open() returns null and the worker reports no
// GPU stats, which is not an error.
#ifndef MEGABATCH_WORKER_DAEMON_GPU_STATS_H_
#define MEGABATCH_WORKER_DAEMON_GPU_STATS_H_

#include <cstdint>
#include <memory>
#include <vector>

namespace megabatch::worker {

struct GpuReading {
  int32_t index = 0;
  double utilization_ratio = 0;
  int64_t memory_used_bytes = 0;
  int64_t memory_total_bytes = 0;
};

// Thread-compatible.
class GpuStats {
 public:
  // Null when NVML is not installed or finds no driver.
  static std::unique_ptr<GpuStats> Open();
  ~GpuStats();
  GpuStats(const GpuStats&) = delete;
  GpuStats& operator=(const GpuStats&) = delete;

  // One reading per index NVML knows; indices it does not know are skipped.
  // NVML numbers GPUs in PCI bus order, as CUDA does with
  // CUDA_DEVICE_ORDER=PCI_BUS_ID.
  std::vector<GpuReading> Read(const std::vector<int32_t>& indices);

 private:
  struct Api;
  explicit GpuStats(std::unique_ptr<Api> api);
  std::unique_ptr<Api> api_;
};

}  // namespace megabatch::worker

#endif  // MEGABATCH_WORKER_DAEMON_GPU_STATS_H_
