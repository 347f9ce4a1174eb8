#include "worker/daemon/gpu_stats.h"

#include <dlfcn.h>

namespace megabatch::worker {
namespace {

// The few NVML types and entry points used, as nvml.h declares them.
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
struct nvmlUtilization_t {
  unsigned int gpu;
  unsigned int memory;
};
struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
constexpr nvmlReturn_t kNvmlSuccess = 0;

}  // namespace

struct GpuStats::Api {
  void* lib = nullptr;
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*shutdown)() = nullptr;
  nvmlReturn_t (*by_index)(unsigned int, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*utilization)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*) = nullptr;

  ~Api() {
    if (shutdown) shutdown();
    if (lib) dlclose(lib);
  }
};

std::unique_ptr<GpuStats> GpuStats::Open() {
  auto api = std::make_unique<Api>();
  api->lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (api->lib == nullptr) return nullptr;
  auto sym = [&](const char* name) { return dlsym(api->lib, name); };
  api->init = reinterpret_cast<decltype(api->init)>(sym("nvmlInit_v2"));
  api->by_index = reinterpret_cast<decltype(api->by_index)>(
      sym("nvmlDeviceGetHandleByIndex_v2"));
  api->utilization = reinterpret_cast<decltype(api->utilization)>(
      sym("nvmlDeviceGetUtilizationRates"));
  api->memory =
      reinterpret_cast<decltype(api->memory)>(sym("nvmlDeviceGetMemoryInfo"));
  auto shutdown =
      reinterpret_cast<decltype(api->shutdown)>(sym("nvmlShutdown"));
  if (!api->init || !api->by_index || !api->utilization || !api->memory ||
      !shutdown || api->init() != kNvmlSuccess) {
    return nullptr;
  }
  api->shutdown = shutdown;  // only once initialised
  return std::unique_ptr<GpuStats>(new GpuStats(std::move(api)));
}

GpuStats::GpuStats(std::unique_ptr<Api> api) : api_(std::move(api)) {}
GpuStats::~GpuStats() = default;

std::vector<GpuReading> GpuStats::Read(const std::vector<int32_t>& indices) {
  std::vector<GpuReading> readings;
  for (int32_t index : indices) {
    nvmlDevice_t device = nullptr;
    nvmlUtilization_t util{};
    nvmlMemory_t memory{};
    if (index < 0 ||
        api_->by_index(static_cast<unsigned>(index), &device) != kNvmlSuccess ||
        api_->utilization(device, &util) != kNvmlSuccess ||
        api_->memory(device, &memory) != kNvmlSuccess) {
      continue;
    }
    readings.push_back({index, util.gpu / 100.0,
                        static_cast<int64_t>(memory.used),
                        static_cast<int64_t>(memory.total)});
  }
  return readings;
}

}  // namespace megabatch::worker
