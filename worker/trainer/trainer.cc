#include "worker/trainer/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <fcntl.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>

#include "common/metric_catalog.h"
#include "common/selection_metrics.h"
#include "worker/trainer/data/files.h"
#include "worker/trainer/diagnostics.h"
#include "worker/trainer/distributed/data_parallel.h"
#include "worker/trainer/loss_scaler.h"
#include "worker/trainer/noise_scale.h"
#include "worker/trainer/optim/lamb.h"
#include "worker/trainer/optim/lars.h"
#include "worker/trainer/optim/registry.h"
#include "worker/trainer/schedule/lr_schedule.h"

namespace megabatch::trainer {

namespace {
// Set from a signal handler: lock-free, static storage.
std::atomic<bool> preemption_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free);
}  // namespace

void RequestPreemption() { preemption_requested.store(true); }
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// LibTorch 2.4 replaced the CUDA-only autocast calls by per-device ones (and
// later releases drop the old names); Debian's is 1.13.
#if TORCH_VERSION_MAJOR > 2 || \
    (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
void SetCudaAutocast(bool enabled) {
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
}
at::ScalarType CudaAutocastDtype() {
  return at::autocast::get_autocast_dtype(at::kCUDA);
}
void SetCudaAutocastDtype(at::ScalarType t) {
  at::autocast::set_autocast_dtype(at::kCUDA, t);
}
#else
void SetCudaAutocast(bool enabled) { at::autocast::set_enabled(enabled); }
at::ScalarType CudaAutocastDtype() {
  return at::autocast::get_autocast_gpu_dtype();
}
void SetCudaAutocastDtype(at::ScalarType t) {
  at::autocast::set_autocast_gpu_dtype(t);
}
#endif

// Autocast for the forward passes in its scope, as `torch.autocast("cuda",
// dtype)` does in Python; a no-op when not enabled.
class AutocastScope {
 public:
  AutocastScope(bool enabled, at::ScalarType dtype) : enabled_(enabled) {
    if (!enabled_) return;
    previous_dtype_ = CudaAutocastDtype();
    SetCudaAutocast(true);
    SetCudaAutocastDtype(dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    SetCudaAutocast(false);
    SetCudaAutocastDtype(previous_dtype_);
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

// Evaluates with the model in eval mode, without gradients, under the
// trial's autocast.
Evaluation EvaluateTask(Task& task, torch::nn::Module& model,
                        const Placement& placement, Split split) {
  torch::NoGradGuard no_grad;
  AutocastScope autocast(placement.autocast, placement.autocast_dtype);
  model.eval();
  Evaluation ev = task.Evaluate(split);
  model.train();
  return ev;
}

// 2: the data order is a stream of epochs (order_epoch), and the previous
// evaluation is kept for interpolating the target crossing.
constexpr int64_t kCheckpointFormat = 2;

// The squared global norm of the parameters' gradients: one norm per
// tensor, squared and summed in double, read from the device once. With
// `minus`, of the gradients less those (an undefined entry counts as 0).
double GradSquaredNorm(const std::vector<torch::Tensor>& params,
                       const std::vector<torch::Tensor>* minus = nullptr) {
  std::vector<torch::Tensor> norms;
  for (size_t i = 0; i < params.size(); ++i) {
    const torch::Tensor& g = params[i].grad();
    if (!g.defined()) continue;
    const bool subtract = minus != nullptr && (*minus)[i].defined();
    norms.push_back(subtract ? (g - (*minus)[i]).norm() : g.norm());
  }
  if (norms.empty()) return 0;
  return torch::stack(norms).to(torch::kDouble).pow(2).sum().item<double>();
}

std::vector<torch::Tensor> CopyGradients(
    const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params) {
    out.push_back(p.grad().defined() ? p.grad().detach().clone()
                                     : torch::Tensor());
  }
  return out;
}

// How one optimizer step is cut into micro-batches on this rank.
struct StepPlan {
  int64_t local_batch = 0;   // this rank's share of the global batch
  int64_t micro = 0;         // samples per micro-batch
  int64_t accumulation = 1;  // micro-batches per step on this rank
  // Each micro-batch loss is a mean over `micro` samples; scaling by
  // micro / batch makes the accumulated gradient, summed over the ranks,
  // the full batch's.
  double loss_scale = 1;
  bool measure_noise = false;  // also sum each micro-batch's |G_small|^2
};

struct Accumulated {
  double loss = 0;
  // Sum over this rank's micro-batches of |G_small|^2, each micro-batch's
  // own mean gradient (McCandlish et al. 2018, App. A).
  double small_sq = 0;
};

// Forward and backward over this rank's micro-batches of `step_batch`,
// leaving their summed gradient (times the loss scaler's scale) in the
// parameters.
Accumulated AccumulateGradients(Task& task, const TrialConfig& config,
                                const Placement& placement,
                                const StepPlan& plan,
                                const torch::Tensor& step_batch,
                                const std::vector<torch::Tensor>& params,
                                const LossScaler& scaler) {
  Accumulated out;
  std::vector<torch::Tensor> before_micro;
  const double grad_scale = plan.loss_scale * scaler.scale();
  for (int64_t k = 0; k < plan.accumulation; ++k) {
    // This micro-batch's place in the global batch.
    int64_t offset = config.rank * plan.local_batch + k * plan.micro;
    torch::Tensor idx =
        step_batch.slice(0, offset, offset + plan.micro).to(placement.device);
    torch::Tensor loss;
    {
      AutocastScope autocast(placement.autocast, placement.autocast_dtype);
      loss = task.Loss(idx, offset) * plan.loss_scale;
    }
    if (scaler.enabled()) {
      (loss * scaler.scale()).backward();
    } else {
      loss.backward();
    }
    out.loss += loss.item<double>();
    if (plan.measure_noise) {
      out.small_sq +=
          GradSquaredNorm(params, k == 0 ? nullptr : &before_micro) /
          (grad_scale * grad_scale);
      if (k + 1 < plan.accumulation) before_micro = CopyGradients(params);
    }
  }
  return out;
}

// Scales the gradients to a global norm of at most `clip_norm` (0: off), as
// torch.nn.utils.clip_grad_norm_ does; `squared_norm` is theirs now.
void ClipGradients(const std::vector<torch::Tensor>& params,
                   double squared_norm, double clip_norm) {
  if (clip_norm <= 0) return;
  const double coef = clip_norm / (std::sqrt(squared_norm) + 1e-6);
  if (coef >= 1) return;
  for (const auto& p : params) {
    if (p.grad().defined()) p.grad().mul_(coef);
  }
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
  // The training data is one endless stream of epochs, each a fresh
  // permutation of the n samples; `order` holds the permutations of epochs
  // order_epoch, order_epoch + 1, ... that the next step may still need.
  torch::Tensor order = torch::empty({0}, torch::kInt64);
  int64_t order_epoch = 0;
  double first_loss = std::nan("");
  double train_seconds = 0;
  bool target_reached = false;
  // The previous evaluation of the target metric (samples < 0: none yet).
  EvalPoint last_eval{-1, 0, 0};
  // The gradient noise scale's EMAs.
  NoiseScaleEstimator noise;
  // fp16 dynamic loss scaling (scale 1 otherwise).
  LossScaler scaler{false};
};

// The sample indices of stream positions [first, last), drawing the next
// epoch's permutation from `shuffle` when the stream reaches it.
torch::Tensor StreamSlice(int64_t first, int64_t last, int64_t n,
                          at::Generator& shuffle, LoopState* s) {
  while (s->order.size(0) >= n && (s->order_epoch + 1) * n <= first) {
    s->order = s->order.slice(0, n);
    ++s->order_epoch;
  }
  while (s->order_epoch * n + s->order.size(0) < last) {
    s->order =
        torch::cat({s->order, torch::randperm(n, shuffle, torch::kInt64)});
  }
  const int64_t base = s->order_epoch * n;
  return s->order.slice(0, first - base, last - base);
}

Status SaveCheckpoint(const TrialConfig& config, torch::nn::Module& model,
                      torch::optim::Optimizer& optimizer,
                      at::Generator& shuffle, const LoopState& s,
                      MetricSink* sink) {
  torch::serialize::OutputArchive archive;
  archive.write("format", c10::IValue(kCheckpointFormat));
  archive.write("config", c10::IValue(config.fingerprint));
  archive.write("step", c10::IValue(s.step));
  archive.write("first_loss", c10::IValue(s.first_loss));
  archive.write("train_seconds", c10::IValue(s.train_seconds));
  archive.write("target_reached", c10::IValue(s.target_reached));
  archive.write("gns_gradient_sq", c10::IValue(s.noise.gradient_sq()));
  archive.write("gns_trace", c10::IValue(s.noise.trace()));
  archive.write("order_epoch", c10::IValue(s.order_epoch));
  archive.write("last_eval_samples", c10::IValue(s.last_eval.samples));
  archive.write("last_eval_seconds", c10::IValue(s.last_eval.seconds));
  archive.write("last_eval_value", c10::IValue(s.last_eval.value));
  archive.write("loss_scale", c10::IValue(s.scaler.scale()));
  archive.write("clean_steps", c10::IValue(s.scaler.clean_steps()));
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
  MEGABATCH_RETURN_IF_ERROR(
      WriteFileAtomically(path, bytes.str(), "checkpoint"));
  sink->Checkpointed(s.step, path);
  return Status();
}

Status LoadCheckpoint(const std::string& path, const TrialConfig& config,
                      torch::nn::Module& model,
                      torch::optim::Optimizer& optimizer,
                      at::Generator& shuffle, torch::Device device,
                      LoopState* s) {
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
    if (format != kCheckpointFormat && format != 1) {
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
    s->noise.Restore(field("gns_gradient_sq").toDouble(),
                     field("gns_trace").toDouble());
    c10::IValue value;
    double scale = s->scaler.scale();
    int64_t clean_steps = s->scaler.clean_steps();
    if (archive.try_read("loss_scale", value)) scale = value.toDouble();
    if (archive.try_read("clean_steps", value)) clean_steps = value.toInt();
    s->scaler.Restore(scale, clean_steps);
    archive.read("order", s->order);
    s->order = s->order.cpu();
    if (format == 1) {
      // Format 1 held the permutation of the epoch the last step was in, with
      // floor(n / b) steps an epoch (exact when b divides n).
      const int64_t n = s->order.size(0);
      s->order_epoch = std::max<int64_t>(0, s->step - 1) /
                       std::max<int64_t>(1, n / config.batch_size);
    } else {
      s->order_epoch = field("order_epoch").toInt();
      s->last_eval = {field("last_eval_samples").toDouble(),
                      field("last_eval_seconds").toDouble(),
                      field("last_eval_value").toDouble()};
    }
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
    return DataLossError("checkpoint " + path +
                         " is unreadable: " + e.what_without_backtrace());
  }
  return Status();
}

// Evaluates on the validation split after s->step steps and logs it; when
// the target is first reached, also where it was crossed (interpolated
// between this evaluation and the previous one). Returns whether it was
// reached now.
Result<bool> EvaluateValidation(Task& task, torch::nn::Module& model,
                                const Placement& placement,
                                const TrialConfig& config,
                                const SelectionMetric* target, int64_t n,
                                LoopState* s, MetricSink* sink) {
  const int64_t batch = config.batch_size;
  Evaluation ev = EvaluateTask(task, model, placement, Split::kValidation);
  const double samples = static_cast<double>(s->step) * batch;
  Metrics eval_metrics = {{metric::kValLoss, ev.loss},
                          {metric::kValAccuracy, ev.accuracy},
                          {metric::kEpoch, samples / n}};
  eval_metrics.insert(eval_metrics.end(), ev.extra.begin(), ev.extra.end());
  bool reached = false;
  if (target != nullptr && !s->target_reached) {
    auto value =
        std::find_if(eval_metrics.begin(), eval_metrics.end(),
                     [&](const auto& m) { return m.first == target->name; });
    if (value == eval_metrics.end()) {
      return InvalidArgumentError("target.metric: model " + config.model_type +
                                  " does not report " +
                                  std::string(target->name));
    }
    const EvalPoint at{samples, s->train_seconds, value->second};
    std::optional<EvalPoint> before;
    if (s->last_eval.samples >= 0) before = s->last_eval;
    std::optional<Crossing> crossing = InterpolateCrossing(
        before, at, config.target_value, target->higher_is_better);
    s->last_eval = at;
    if (crossing) {
      reached = true;
      s->target_reached = true;
      eval_metrics.push_back(
          {metric::kTargetReachedSamples, crossing->samples});
      eval_metrics.push_back(
          {metric::kTargetReachedSteps, crossing->samples / batch});
      eval_metrics.push_back(
          {metric::kTargetReachedSeconds, crossing->seconds});
      eval_metrics.push_back(
          {metric::kTargetBracketSamples, crossing->lower_samples});
      if (s->noise.has_value()) {
        eval_metrics.push_back(
            {metric::kNoiseScaleAtTarget, s->noise.b_simple()});
      }
    }
  }
  sink->Log(s->step, eval_metrics);
  return reached;
}

}  // namespace

Result<TrialResult> RunTrial(const TrialConfig& config,
                             const ImageDataset& data, MetricSink* sink,
                             const std::string& resume_from) {
  std::unique_ptr<Task> task = MakeImageTask(config, data);
  return RunTrial(config, *task, sink, resume_from);
}

Result<TrialResult> RunTrial(const TrialConfig& config, Task& task,
                             MetricSink* sink, const std::string& resume_from) {
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
    std::cerr << "megabatch-trainer: rank " << config.rank << " of "
              << config.world_size << " joined " << config.rendezvous_host
              << ":" << config.rendezvous_port << "\n";
  }
  // Rank 0 alone evaluates, reports and checkpoints.
  const bool reporter = config.rank == 0;
  auto optimizer_or = MakeOptimizer(config.optimizer, *model, config.lr);
  if (!optimizer_or.ok()) return optimizer_or.status();
  torch::optim::Optimizer& optimizer = **optimizer_or;

  const int64_t n = task.train_size();
  if (config.batch_size > n) {
    return InvalidArgumentError(
        "batch_size: " + std::to_string(config.batch_size) +
        " exceeds the training set's " + std::to_string(n) + " samples");
  }
  const int64_t batch = config.batch_size;
  const int64_t total_steps = TotalSteps(config, n);
  const LrSchedule schedule{config.lr,    WarmupSteps(config, n),
                            total_steps,  config.decay,
                            config.power, config.warmup_start_lr};
  // This rank's share of every global batch, in micro-batches. With
  // noise_scale: always, a step of one micro-batch on one rank is run as two
  // halves, so that B_simple can be measured (docs/method.md).
  StepPlan plan;
  plan.local_batch = batch / config.world_size;
  const bool halves = config.noise_scale == "always" &&
                      config.world_size == 1 &&
                      config.micro_batch_size == batch && batch % 2 == 0;
  plan.micro = halves ? batch / 2 : config.micro_batch_size;
  plan.accumulation = plan.local_batch / plan.micro;
  plan.measure_noise =
      config.noise_scale != "off" && plan.accumulation * config.world_size >= 2;
  plan.loss_scale = static_cast<double>(plan.micro) / batch;
  const double clip_norm = TrainerClipNorm(config.optimizer);
  const SelectionMetric* target =
      config.target_metric.empty() ? nullptr
                                   : FindSelectionMetric(config.target_metric);

  task.To(device);
  at::Generator shuffle = at::make_generator<at::CPUGeneratorImpl>(
      static_cast<uint64_t>(config.seed));
  const std::vector<torch::Tensor> params = model->parameters();
  std::vector<std::string> param_names;
  for (const auto& item : model->named_parameters())
    param_names.push_back(item.key());
  DiagnosticsCollector diagnostics(params, param_names, RecorderOf(optimizer));
  LoopState s;
  s.scaler = LossScaler(placement.loss_scaling);
  // B_small = micro, B_big = batch, over all micro-batches of all ranks.
  s.noise = NoiseScaleEstimator(
      plan.micro, batch, plan.accumulation * config.world_size, total_steps);
  if (!resume_from.empty()) {
    MEGABATCH_RETURN_IF_ERROR(LoadCheckpoint(resume_from, config, *model,
                                             optimizer, shuffle, device, &s));
  }
  if (dp) {
    // Every rank must continue from the same step: with per-machine
    // checkpoints a requeued trial's ranks could find different ones.
    const double step = static_cast<double>(s.step);
    auto sums = dp->Sum({step, step * step});
    if (!sums.ok()) return sums.status();
    if ((*sums)[1] * config.world_size != (*sums)[0] * (*sums)[0]) {
      return FailedPreconditionError(
          "ranks start from different steps (this rank: " +
          std::to_string(s.step) +
          "); a data-parallel trial resumes only from checkpoints all its "
          "workers read "
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
  // A completed trial (not a diverged one) is evaluated on the test split
  // once, at its last step; nothing selects by it.
  auto finish_with_test = [&]() -> Result<TrialResult> {
    if (reporter && task.has_test_split()) {
      Evaluation ev = EvaluateTask(task, *model, placement, Split::kTest);
      sink->Log(s.step, {{metric::kTestLoss, ev.loss},
                         {metric::kTestAccuracy, ev.accuracy}});
    }
    return finish();
  };
  // Evaluates on the validation split after s.step steps and logs it; when
  // the target is first reached, also where it was crossed. Returns whether
  // it was reached now.
  auto evaluate = [&]() -> Result<bool> {
    return EvaluateValidation(task, *model, placement, config, target, n, &s,
                              sink);
  };
  // A checkpoint that cannot be written (a full disk) costs its resume
  // point, not the trial: training goes on, says so on stderr and as a
  // metric, and a resume uses the last checkpoint that was written.
  auto checkpoint = [&] {
    Status saved = SaveCheckpoint(config, *model, optimizer, shuffle, s, sink);
    if (saved.ok()) return;
    std::cerr << "megabatch-trainer: checkpoint at step " << s.step
              << " not written (" << saved.message() << "); training goes on\n";
    sink->Log(s.step, {{metric::kCheckpointFailed, 1}});
  };
  auto eval_due = [&](int64_t step) {
    if (config.eval_every_steps > 0) return step % config.eval_every_steps == 0;
    const int64_t every =
        config.eval_every_samples > 0 ? config.eval_every_samples : n;
    return (step * batch) / every > ((step - 1) * batch) / every;
  };

  result.steps = s.step;
  if (s.step == 0 && reporter && target != nullptr) {
    // The starting point, so that the first interval can be interpolated.
    auto reached = evaluate();
    if (!reached.ok()) return reached.status();
  }
  for (int64_t step = s.step + 1; step <= total_steps; ++step) {
    auto start = Clock::now();
    torch::Tensor step_batch =
        StreamSlice((step - 1) * batch, step * batch, n, shuffle, &s);
    double lr = schedule.At(step);
    SetLearningRate(optimizer, lr);
    optimizer.zero_grad();
    task.BeginStep(step, step_batch);
    const Accumulated accumulated = AccumulateGradients(
        task, config, placement, plan, step_batch, params, s.scaler);
    double loss_value = accumulated.loss;
    double small_sq = accumulated.small_sq;
    double allreduce_seconds = 0;
    if (dp) {
      MEGABATCH_RETURN_IF_ERROR(dp->SumGradients(params));
      allreduce_seconds = dp->last_seconds();
      auto summed = dp->Sum({loss_value, small_sq});
      if (!summed.ok()) return summed.status();
      loss_value = (*summed)[0];
      small_sq = (*summed)[1];
    }
    if (s.scaler.enabled()) {
      for (const auto& p : params) {
        if (p.grad().defined()) p.grad().mul_(1.0 / s.scaler.scale());
      }
    }
    const double big_sq = GradSquaredNorm(params);
    // fp16: an overflowed gradient skips the step and halves the scale.
    const bool skip_step = s.scaler.Update(std::isfinite(big_sq));
    if (!skip_step) ClipGradients(params, big_sq, clip_norm);
    const bool diagnose = !skip_step && config.diagnostics_every_steps > 0 &&
                          step % config.diagnostics_every_steps == 0;
    if (diagnose) diagnostics.Begin();
    if (!skip_step) optimizer.step();
    double step_seconds = Seconds(Clock::now() - start);
    s.train_seconds += step_seconds;
    s.step = step;
    result.steps = step;

    Metrics step_metrics = {{metric::kTrainLoss, loss_value},
                            {metric::kLr, lr},
                            {metric::kSamplesPerSecond, batch / step_seconds}};
    if (step == 1)
      step_metrics.push_back({metric::kTrainSamples, static_cast<double>(n)});
    if (!skip_step)
      step_metrics.push_back({metric::kGradNorm, std::sqrt(big_sq)});
    if (s.scaler.enabled())
      step_metrics.push_back({metric::kLossScale, s.scaler.scale()});
    if (dp)
      step_metrics.push_back({metric::kAllreduceSeconds, allreduce_seconds});
    if (plan.measure_noise && !skip_step) {
      s.noise.Add(small_sq, big_sq);
      const Metrics noise = s.noise.StepMetrics(step);
      step_metrics.insert(step_metrics.end(), noise.begin(), noise.end());
    }
    if (diagnose) {
      const Metrics collected = diagnostics.Collect();
      step_metrics.insert(step_metrics.end(), collected.begin(),
                          collected.end());
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

    if (preemption_requested.load() && !dp && step < total_steps) {
      // The evaluation due at this step runs again on resume, and logs the
      // same values.
      if (reporter) checkpoint();
      result.outcome = Outcome::kPreempted;
      result.message = "preempted after step " + std::to_string(step) +
                       " (checkpoint written)";
      return finish();
    }

    // After the evaluation, so that a resumed run does not repeat it.
    bool checkpoint_now = config.checkpoint_every_steps > 0 &&
                          step % config.checkpoint_every_steps == 0 &&
                          step < total_steps;
    if (!eval_due(step) && step != total_steps) {
      if (checkpoint_now && reporter) checkpoint();
      continue;
    }
    if (!reporter) {
      // Rank 0 evaluates; every rank learns whether it stops the trial.
      auto stop = dp->Sum({0.0});
      if (!stop.ok()) return stop.status();
      if ((*stop)[0] > 0) return finish();
      continue;
    }
    auto reached = evaluate();
    if (!reached.ok()) return reached.status();
    if (dp) {
      auto stop = dp->Sum({*reached && config.target_stop ? 1.0 : 0.0});
      if (!stop.ok()) return stop.status();
    }
    if (*reached && config.target_stop) {
      result.message = "target reached at step " + std::to_string(step);
      return finish_with_test();
    }
    if (checkpoint_now) checkpoint();
  }
  return finish_with_test();
}

}  // namespace megabatch::trainer
