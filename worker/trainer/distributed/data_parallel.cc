#include "worker/trainer/distributed/data_parallel.h"

#include <torch/torch.h>

#include <chrono>
#include <string>

#ifdef MEGABATCH_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef MEGABATCH_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/version.h>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace megabatch::trainer {

namespace {
constexpr int64_t kBucketBytes = 25 << 20;

// The object that runs the collectives: the process group in LibTorch 1.x,
// its backend (ProcessGroupGloo and ProcessGroupNCCL derive from it) since 2.0.
#if TORCH_VERSION_MAJOR >= 2
using Collectives = c10d::Backend;
#else
using Collectives = c10d::ProcessGroup;
#endif
}  // namespace

struct DataParallel::Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Collectives> pg;
  torch::Device device = torch::kCPU;
};

DataParallel::DataParallel(std::unique_ptr<Group> group)
    : group_(std::move(group)) {}
DataParallel::~DataParallel() = default;

Result<std::unique_ptr<DataParallel>> DataParallel::Join(
    const TrialConfig& config, torch::Device device) {
  const std::string where =
      config.rendezvous_host + ":" + std::to_string(config.rendezvous_port);
  const auto timeout = std::chrono::seconds(config.collective_timeout_s);
  auto group = std::make_unique<Group>();
  group->device = device;
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(config.rendezvous_port);
    options.isServer = config.rank == 0;
    options.numWorkers = static_cast<size_t>(config.world_size);
    options.waitWorkers = true;
    options.timeout = timeout;
    group->store =
        c10::make_intrusive<c10d::TCPStore>(config.rendezvous_host, options);
    if (device.is_cuda()) {
#ifdef MEGABATCH_C10D_NCCL
      auto nccl = c10d::ProcessGroupNCCL::Options::create();
      nccl->timeout = timeout;
      group->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          group->store, config.rank, config.world_size, nccl);
#else
      return Status(StatusCode::kUnimplemented,
                    "data parallel on cuda: this LibTorch has no c10d NCCL");
#endif
    } else {
#ifdef MEGABATCH_C10D_GLOO
      auto gloo = c10d::ProcessGroupGloo::Options::create();
      gloo->timeout = timeout;
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(
          config.rendezvous_host));
      group->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(
          group->store, config.rank, config.world_size, gloo);
#else
      return Status(StatusCode::kUnimplemented,
                    "data parallel on cpu: this LibTorch has no c10d Gloo");
#endif
    }
  } catch (const std::exception& e) {
    return UnavailableError(
        "rendezvous " + where + " (rank " + std::to_string(config.rank) +
        " of " + std::to_string(config.world_size) + "): " + e.what());
  }
  return std::unique_ptr<DataParallel>(new DataParallel(std::move(group)));
}

Status DataParallel::SumGradients(const std::vector<torch::Tensor>& params) {
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  // Consecutive parameters of one dtype share a bucket up to kBucketBytes.
  std::vector<std::vector<torch::Tensor>> buckets;
  int64_t bucket_bytes = 0, total_bytes = 0;
  for (const auto& p : params) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    const torch::Tensor& g = p.grad();
    const int64_t bytes = g.numel() * static_cast<int64_t>(g.element_size());
    if (buckets.empty() || bucket_bytes + bytes > kBucketBytes ||
        buckets.back().front().scalar_type() != g.scalar_type()) {
      buckets.emplace_back();
      bucket_bytes = 0;
    }
    buckets.back().push_back(g);
    bucket_bytes += bytes;
    total_bytes += bytes;
  }
  try {
    std::vector<torch::Tensor> flats;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (const auto& bucket : buckets) {
      std::vector<torch::Tensor> pieces;
      for (const auto& g : bucket) pieces.push_back(g.reshape({-1}));
      flats.push_back(torch::cat(pieces));
      std::vector<torch::Tensor> one{flats.back()};
      works.push_back(group_->pg->allreduce(one));
    }
    for (size_t b = 0; b < buckets.size(); ++b) {
      works[b]->wait();
      int64_t offset = 0;
      for (auto& g : buckets[b]) {
        g.copy_(flats[b].slice(0, offset, offset + g.numel()).view_as(g));
        offset += g.numel();
      }
    }
  } catch (const std::exception& e) {
    return UnavailableError(
        std::string("gradient all-reduce failed (a rank is gone or "
                    "timed out): ") +
        e.what());
  }
  last_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  last_bytes_ = total_bytes;
  return Status();
}

Result<std::vector<double>> DataParallel::Sum(
    const std::vector<double>& values) {
  try {
    std::vector<torch::Tensor> t{
        torch::tensor(values, torch::dtype(torch::kFloat64))
            .to(group_->device)};
    group_->pg->allreduce(t)->wait();
    torch::Tensor cpu = t[0].to(torch::kCPU);
    return std::vector<double>(cpu.data_ptr<double>(),
                               cpu.data_ptr<double>() + cpu.numel());
  } catch (const std::exception& e) {
    return UnavailableError(
        std::string("all-reduce failed (a rank is gone or timed out): ") +
        e.what());
  }
}

}  // namespace megabatch::trainer
