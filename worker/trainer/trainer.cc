#include "worker/trainer/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>

#include "worker/trainer/data/files.h"
#include "worker/trainer/distributed/data_parallel.h"
#include "worker/trainer/optim/lamb.h"
#include "worker/trainer/optim/lars.h"
#include "worker/trainer/optim/registry.h"

namespace megabatch::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Autocast for the forward passes in its scope, as `torch.autocast("cuda",
// dtype)` does in Python; a no-op when not enabled.
class AutocastScope {
 public:
  AutocastScope(bool enabled, at::ScalarType dtype) : enabled_(enabled) {
    if (!enabled_) return;
    previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_enabled(false);
    at::autocast::set_autocast_gpu_dtype(previous_dtype_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_;
  at::ScalarType previous_dtype_ = at::kHalf;
};

// Where the trial runs and in which precision.
struct Placement {
  torch::Device device = torch::kCPU;
  bool autocast = false;
  at::ScalarType autocast_dtype = at::kBFloat16;
  bool loss_scaling = false;  // fp16: dynamic loss scaling
};

Result<Placement> Place(const TrialConfig& config) {
  const bool cuda = torch::cuda::is_available();
  if (config.device == "cuda" && !cuda) {
    return FailedPreconditionError(
        "device: cuda requested, but this trainer's LibTorch has no CUDA or "
        "no GPU is visible (CUDA_VISIBLE_DEVICES)");
  }
  Placement p;
  if (config.device != "cpu" && cuda) p.device = torch::Device(torch::kCUDA, 0);
  if (config.precision != "fp32") {
    if (!p.device.is_cuda()) {
      return FailedPreconditionError("precision: " + config.precision +
                                     " autocast needs a CUDA device; this "
                                     "trial would run on cpu");
    }
    p.autocast = true;
    p.autocast_dtype = config.precision == "bf16" ? at::kBFloat16 : at::kHalf;
    p.loss_scaling = config.precision == "fp16";
  }
  return p;
}

// GradScaler's defaults: start at 2^16, halve on an overflow, double after
// this many clean steps.
constexpr double kInitialLossScale = 65536.0;
constexpr int64_t kLossScaleGrowthInterval = 2000;

// Evaluates with the model in eval mode, without gradients, under the
// trial's autocast.
Evaluation EvaluateTask(Task& task, torch::nn::Module& model, const Placement& placement) {
  torch::NoGradGuard no_grad;
  AutocastScope autocast(placement.autocast, placement.autocast_dtype);
  model.eval();
  Evaluation ev = task.Evaluate();
  model.train();
  return ev;
}

constexpr int64_t kCheckpointFormat = 1;
// Weight of the newest step in the gradient-noise-scale EMAs.
constexpr double kNoiseScaleSmoothing = 0.05;

// The squared global norm of the parameters' gradients: one norm per
// tensor, squared and summed in double, read from the device once.
double GradSquaredNorm(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> norms;
  for (const auto& p : params) {
    if (p.grad().defined()) norms.push_back(p.grad().norm());
  }
  if (norms.empty()) return 0;
  return torch::stack(norms).to(torch::kDouble).pow(2).sum().item<double>();
}

// The optimizer's trust-ratio recorder, for those that have one.
optim::TrustRatios* RecorderOf(torch::optim::Optimizer& optimizer) {
  if (auto* lamb = dynamic_cast<optim::Lamb*>(&optimizer)) {
    return &lamb->trust_ratios();
  }
  if (auto* lars = dynamic_cast<optim::Lars*>(&optimizer)) {
    return &lars->trust_ratios();
  }
  return nullptr;
}

// Everything the loop carries from one step to the next, besides the model,
// the optimizer and the RNGs.
struct LoopState {
  int64_t step = 0;  // the last completed step
  torch::Tensor order;
  double first_loss = std::nan("");
  double train_seconds = 0;
  bool target_reached = false;
  // Gradient noise scale EMAs of |G|^2 and tr(Sigma); NaN until the first.
  double gns_gradient_sq = std::nan("");
  double gns_trace = std::nan("");
  // fp16 dynamic loss scaling (1 otherwise).
  double loss_scale = 1;
  int64_t clean_steps = 0;
};

Status SaveCheckpoint(const TrialConfig& config, torch::nn::Module& model,
                      torch::optim::Optimizer& optimizer, at::Generator& shuffle,
                      const LoopState& s, MetricSink* sink) {
  torch::serialize::OutputArchive archive;
  archive.write("format", c10::IValue(kCheckpointFormat));
  archive.write("config", c10::IValue(config.fingerprint));
  archive.write("step", c10::IValue(s.step));
  archive.write("first_loss", c10::IValue(s.first_loss));
  archive.write("train_seconds", c10::IValue(s.train_seconds));
  archive.write("target_reached", c10::IValue(s.target_reached));
  archive.write("gns_gradient_sq", c10::IValue(s.gns_gradient_sq));
  archive.write("gns_trace", c10::IValue(s.gns_trace));
  archive.write("loss_scale", c10::IValue(s.loss_scale));
  archive.write("clean_steps", c10::IValue(s.clean_steps));
  archive.write("order", s.order);
  {
    std::lock_guard<std::mutex> lock(shuffle.mutex());
    archive.write("shuffle_rng", shuffle.get_state());
  }
  at::Generator global = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> lock(global.mutex());
    archive.write("global_rng", global.get_state());
  }
  torch::serialize::OutputArchive model_archive, optimizer_archive;
  model.save(model_archive);
  optimizer.save(optimizer_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optimizer_archive);
  std::ostringstream bytes;
  archive.save_to(bytes);
  std::string path = config.checkpoint_path;
  if (config.checkpoint_per_step) {
    path = (std::filesystem::path(path).parent_path() /
            ("step-" + std::to_string(s.step) + ".pt"))
               .string();
  }
  MEGABATCH_RETURN_IF_ERROR(WriteFileAtomically(path, bytes.str(), "checkpoint"));
  sink->Checkpointed(s.step, path);
  return Status();
}

Status LoadCheckpoint(const std::string& path, const TrialConfig& config,
                      torch::nn::Module& model,
                      torch::optim::Optimizer& optimizer, at::Generator& shuffle,
                      torch::Device device, LoopState* s) {
  if (!std::filesystem::exists(path)) {
    return NotFoundError("checkpoint " + path + " does not exist");
  }
  try {
    torch::serialize::InputArchive archive;
    // Every tensor straight onto the trial's device; the RNG states and the
    // data order are CPU tensors again below.
    archive.load_from(path, device);
    auto field = [&](const char* key) {
      c10::IValue value;
      archive.read(key, value);
      return value;
    };
    int64_t format = field("format").toInt();
    if (format != kCheckpointFormat) {
      return DataLossError("checkpoint " + path + ": unknown format " +
                           std::to_string(format));
    }
    if (field("config").toStringRef() != config.fingerprint) {
      return InvalidArgumentError("checkpoint " + path +
                                  " was written by a different trial config");
    }
    s->step = field("step").toInt();
    s->first_loss = field("first_loss").toDouble();
    s->train_seconds = field("train_seconds").toDouble();
    s->target_reached = field("target_reached").toBool();
    s->gns_gradient_sq = field("gns_gradient_sq").toDouble();
    s->gns_trace = field("gns_trace").toDouble();
    c10::IValue value;
    if (archive.try_read("loss_scale", value)) s->loss_scale = value.toDouble();
    if (archive.try_read("clean_steps", value)) s->clean_steps = value.toInt();
    archive.read("order", s->order);
    s->order = s->order.cpu();
    torch::Tensor rng;
    archive.read("shuffle_rng", rng);
    rng = rng.cpu();
    {
      std::lock_guard<std::mutex> lock(shuffle.mutex());
      shuffle.set_state(rng);
    }
    archive.read("global_rng", rng);
    rng = rng.cpu();
    at::Generator global = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(global.mutex());
      global.set_state(rng);
    }
    torch::serialize::InputArchive model_archive, optimizer_archive;
    archive.read("model", model_archive);
    archive.read("optimizer", optimizer_archive);
    model.load(model_archive);
    optimizer.load(optimizer_archive);
  } catch (const c10::Error& e) {
    return DataLossError("checkpoint " + path + " is unreadable: " +
                         e.what_without_backtrace());
  }
  return Status();
}

}  // namespace

Result<TrialResult> RunTrial(const TrialConfig& config, const ImageDataset& data,
                             MetricSink* sink, const std::string& resume_from) {
  std::unique_ptr<Task> task = MakeImageTask(config, data);
  return RunTrial(config, *task, sink, resume_from);
}

Result<TrialResult> RunTrial(const TrialConfig& config, Task& task, MetricSink* sink,
                             const std::string& resume_from) {
  torch::manual_seed(static_cast<uint64_t>(config.seed));
  torch::set_num_threads(config.threads);
  auto model_or = task.BuildModel();
  if (!model_or.ok()) return model_or.status();
  std::shared_ptr<torch::nn::Module> model = *model_or;
  auto placement_or = Place(config);
  if (!placement_or.ok()) return placement_or.status();
  const Placement placement = *placement_or;
  const torch::Device device = placement.device;
  // Built on the CPU from the seed, then moved: the same initial weights on
  // every device.
  model->to(device);
  std::cerr << "megabatch-trainer: trial " << config.trial_id << " on "
            << device.str() << " (" << config.precision << ", "
            << config.threads << " threads)\n";
  // Data parallel: join the trial's process group before anything else can
  // fail on one rank only and leave the others waiting at the rendezvous.
  std::unique_ptr<DataParallel> dp;
  if (config.world_size > 1) {
    auto joined = DataParallel::Join(config, device);
    if (!joined.ok()) return joined.status();
    dp = std::move(*joined);
    std::cerr << "megabatch-trainer: rank " << config.rank << " of " << config.world_size
              << " joined " << config.rendezvous_host << ":" << config.rendezvous_port << "\n";
  }
  // Rank 0 alone evaluates, reports and checkpoints.
  const bool reporter = config.rank == 0;
  auto optimizer_or = MakeOptimizer(config.optimizer, *model, config.lr);
  if (!optimizer_or.ok()) return optimizer_or.status();
  torch::optim::Optimizer& optimizer = **optimizer_or;

  const int64_t n = task.train_size();
  if (config.batch_size > n) {
    return InvalidArgumentError("batch_size: " +
                                std::to_string(config.batch_size) +
                                " exceeds the training set's " +
                                std::to_string(n) + " samples");
  }
  const int64_t steps_per_epoch = StepsPerEpoch(config, n);
  const int64_t total_steps = TotalSteps(config, n);
  const LrSchedule schedule{config.lr, WarmupSteps(config, n), total_steps,
                            config.decay, config.power};
  const int64_t micro = config.micro_batch_size;
  // This rank's share of every global batch, in micro-batches.
  const int64_t local_batch = config.batch_size / config.world_size;
  const int64_t accumulation = local_batch / micro;
  // Each micro-batch loss is a mean over `micro` samples; scaling by
  // micro / batch makes the accumulated gradient, summed over the ranks, the
  // full batch's.
  const double loss_scale = static_cast<double>(micro) / config.batch_size;

  task.To(device);
  at::Generator shuffle = at::make_generator<at::CPUGeneratorImpl>(
      static_cast<uint64_t>(config.seed));
  const std::vector<torch::Tensor> params = model->parameters();
  std::vector<std::string> param_names;
  for (const auto& item : model->named_parameters()) param_names.push_back(item.key());
  optim::TrustRatios* trust_ratios = RecorderOf(optimizer);
  LoopState s;
  if (placement.loss_scaling) s.loss_scale = kInitialLossScale;
  if (!resume_from.empty()) {
    MEGABATCH_RETURN_IF_ERROR(
        LoadCheckpoint(resume_from, config, *model, optimizer, shuffle, device, &s));
  }
  if (dp) {
    // Every rank must continue from the same step: with per-machine
    // checkpoints a requeued trial's ranks could find different ones.
    const double step = static_cast<double>(s.step);
    auto sums = dp->Sum({step, step * step});
    if (!sums.ok()) return sums.status();
    if ((*sums)[1] * config.world_size != (*sums)[0] * (*sums)[0]) {
      return FailedPreconditionError(
          "ranks start from different steps (this rank: " + std::to_string(s.step) +
          "); a data-parallel trial resumes only from checkpoints all its workers read "
          "(the coordinator's --artifacts on shared storage)");
    }
  }
  model->train();

  TrialResult result;
  auto finish = [&]() -> Result<TrialResult> {
    for (const auto& p : model->parameters()) {
      result.parameters.push_back(p.detach().to(torch::kCPU).clone());
    }
    return result;
  };
  result.steps = s.step;
  for (int64_t step = s.step + 1; step <= total_steps; ++step) {
    int64_t in_epoch = (step - 1) % steps_per_epoch;
    if (in_epoch == 0) s.order = torch::randperm(n, shuffle, torch::kInt64);
    auto start = Clock::now();
    double lr = schedule.At(step);
    SetLearningRate(optimizer, lr);
    optimizer.zero_grad();
    task.BeginStep(step, s.order.slice(0, in_epoch * config.batch_size,
                                       (in_epoch + 1) * config.batch_size));
    double loss_value = 0;
    double small_sq = 0;  // |G_small|^2 of the first micro-batch
    for (int64_t k = 0; k < accumulation; ++k) {
      // This micro-batch's place in the global batch.
      int64_t offset = config.rank * local_batch + k * micro;
      int64_t begin = in_epoch * config.batch_size + offset;
      torch::Tensor idx = s.order.slice(0, begin, begin + micro).to(device);
      torch::Tensor loss;
      {
        AutocastScope autocast(placement.autocast, placement.autocast_dtype);
        loss = task.Loss(idx, offset) * loss_scale;
      }
      if (placement.loss_scaling) {
        (loss * s.loss_scale).backward();
      } else {
        loss.backward();
      }
      loss_value += loss.item<double>();
      if (k == 0 && accumulation > 1) {
        const double scale = loss_scale * s.loss_scale;
        small_sq = GradSquaredNorm(params) / (scale * scale);
      }
    }
    double allreduce_seconds = 0;
    if (dp) {
      MEGABATCH_RETURN_IF_ERROR(dp->SumGradients(params));
      allreduce_seconds = dp->last_seconds();
      auto summed = dp->Sum({loss_value});
      if (!summed.ok()) return summed.status();
      loss_value = (*summed)[0];
    }
    if (placement.loss_scaling) {
      for (const auto& p : params) {
        if (p.grad().defined()) p.grad().mul_(1.0 / s.loss_scale);
      }
    }
    const double big_sq = GradSquaredNorm(params);
    // fp16: an overflowed gradient skips the step and halves the scale.
    bool skip_step = false;
    if (placement.loss_scaling) {
      if (!std::isfinite(big_sq)) {
        skip_step = true;
        s.loss_scale /= 2;
        s.clean_steps = 0;
      } else if (++s.clean_steps == kLossScaleGrowthInterval) {
        s.loss_scale *= 2;
        s.clean_steps = 0;
      }
    }
    const bool diagnose = !skip_step && config.diagnostics_every_steps > 0 &&
                          step % config.diagnostics_every_steps == 0;
    std::vector<torch::Tensor> before;
    if (diagnose) {
      for (const auto& p : params) before.push_back(p.detach().clone());
      if (trust_ratios) trust_ratios->set_enabled(true);
    }
    if (!skip_step) optimizer.step();
    double step_seconds = Seconds(Clock::now() - start);
    s.train_seconds += step_seconds;
    s.step = step;
    result.steps = step;

    Metrics step_metrics = {{"train_loss", loss_value},
                            {"lr", lr},
                            {"samples_per_second", config.batch_size / step_seconds}};
    if (!skip_step) step_metrics.push_back({"grad_norm", std::sqrt(big_sq)});
    if (placement.loss_scaling) step_metrics.push_back({"loss_scale", s.loss_scale});
    if (dp) step_metrics.push_back({"allreduce_seconds", allreduce_seconds});
    if (accumulation > 1 && !skip_step) {
      // LARGE_BATCH.md: b_s = micro, b_b = batch.
      const double bs = static_cast<double>(micro);
      const double bb = static_cast<double>(config.batch_size);
      double g2 = (bb * big_sq - bs * small_sq) / (bb - bs);
      double trace = (small_sq - big_sq) / (1.0 / bs - 1.0 / bb);
      auto ema = [](double prev, double x) {
        return std::isnan(prev) ? x
                                : (1 - kNoiseScaleSmoothing) * prev +
                                      kNoiseScaleSmoothing * x;
      };
      s.gns_gradient_sq = ema(s.gns_gradient_sq, g2);
      s.gns_trace = ema(s.gns_trace, trace);
      step_metrics.push_back({"gns_gradient_sq", s.gns_gradient_sq});
      step_metrics.push_back({"gns_trace", s.gns_trace});
      if (s.gns_gradient_sq > 0) {
        step_metrics.push_back(
            {"gradient_noise_scale", s.gns_trace / s.gns_gradient_sq});
      }
    }
    if (diagnose) {
      std::map<const c10::TensorImpl*, double> ratio_of;
      if (trust_ratios) {
        for (const auto& [impl, ratio] : trust_ratios->Last()) ratio_of[impl] = ratio;
        trust_ratios->set_enabled(false);
      }
      for (size_t i = 0; i < params.size(); ++i) {
        const std::string& name = param_names[i];
        step_metrics.push_back({"weight_norm/" + name, params[i].norm().item<double>()});
        step_metrics.push_back(
            {"update_norm/" + name, (params[i] - before[i]).norm().item<double>()});
        auto it = ratio_of.find(params[i].unsafeGetTensorImpl());
        if (it != ratio_of.end()) step_metrics.push_back({"trust_ratio/" + name, it->second});
      }
    }
    if (reporter) sink->Log(step, step_metrics);
    if (step == 1) s.first_loss = loss_value;
    if (!std::isfinite(loss_value) ||
        loss_value > config.divergence_factor * s.first_loss) {
      result.outcome = Outcome::kDiverged;
      result.message = "train_loss " + std::to_string(loss_value) +
                       " at step " + std::to_string(step) +
                       " (first step: " + std::to_string(s.first_loss) + ")";
      return finish();
    }

    bool eval_now = config.eval_every_steps > 0
                        ? step % config.eval_every_steps == 0
                        : step % steps_per_epoch == 0;
    // After the evaluation, so that a resumed run does not repeat it.
    bool checkpoint_now = config.checkpoint_every_steps > 0 &&
                          step % config.checkpoint_every_steps == 0 &&
                          step < total_steps;
    if (!eval_now && step != total_steps) {
      if (checkpoint_now && reporter) {
        MEGABATCH_RETURN_IF_ERROR(
            SaveCheckpoint(config, *model, optimizer, shuffle, s, sink));
      }
      continue;
    }
    if (!reporter) {
      // Rank 0 evaluates; every rank learns whether it stops the trial.
      auto stop = dp->Sum({0.0});
      if (!stop.ok()) return stop.status();
      if ((*stop)[0] > 0) return finish();
      continue;
    }
    Evaluation ev = EvaluateTask(task, *model, placement);
    Metrics eval_metrics = {
        {"test_loss", ev.loss},
        {"test_accuracy", ev.accuracy},
        {"epoch", static_cast<double>(step) / steps_per_epoch}};
    eval_metrics.insert(eval_metrics.end(), ev.extra.begin(), ev.extra.end());
    bool reached = false;
    if (!config.target_metric.empty() && !s.target_reached) {
      reached = config.target_metric == "test_accuracy"
                    ? ev.accuracy >= config.target_value
                    : ev.loss <= config.target_value;
    }
    if (reached) {
      s.target_reached = true;
      eval_metrics.push_back({"target_reached_seconds", s.train_seconds});
      eval_metrics.push_back(
          {"target_reached_samples",
           static_cast<double>(step) * static_cast<double>(config.batch_size)});
    }
    sink->Log(step, eval_metrics);
    if (dp) {
      auto stop = dp->Sum({reached && config.target_stop ? 1.0 : 0.0});
      if (!stop.ok()) return stop.status();
    }
    if (reached && config.target_stop) {
      result.message = "target reached at step " + std::to_string(step);
      return finish();
    }
    if (checkpoint_now) {
      MEGABATCH_RETURN_IF_ERROR(
          SaveCheckpoint(config, *model, optimizer, shuffle, s, sink));
    }
  }
  return finish();
}

}  // namespace megabatch::trainer
