// The trainer on real Fashion-MNIST (Debian's dataset-fashion-mnist):
// gradient accumulation, determinism, targets, divergence and the CNN.
#include "worker/trainer/trainer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <fstream>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/trainer_testing.h"

namespace megabatch::trainer {
namespace {

using nlohmann::json;

using testing::RecordingSink;

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto d = LoadFashionMnist("/usr/share/datasets/fashion-mnist");
    ASSERT_OK(d);
    data_ = new ImageDataset(std::move(*d));
  }
  static void TearDownTestSuite() { delete data_; }

  static TrialConfig Config(json overrides) {
    json doc = {{"seed", 7},
                {"model", {{"type", "mlp"}, {"hidden", {64}}}},
                {"optimizer", {{"name", "sgd"}}},
                {"batch_size", 256},
                {"lr", 0.05},
                {"budget", {{"steps", 3}}},
                {"threads", 1}};
    doc.merge_patch(overrides);
    auto c = ParseTrialConfig(doc);
    EXPECT_OK(c);
    return *c;
  }

  static TrialResult Run(const TrialConfig& c, RecordingSink* sink) {
    auto r = RunTrial(c, *data_, sink);
    EXPECT_OK(r);
    return *r;
  }

  static ImageDataset* data_;

 public:
  static TrialConfig PublicConfig(json overrides) { return Config(overrides); }
  static const ImageDataset& Data() { return *data_; }
};

ImageDataset* TrainerTest::data_ = nullptr;

void ExpectParametersClose(const TrialResult& a, const TrialResult& b,
                           double rel) {
  ASSERT_EQ(a.parameters.size(), b.parameters.size());
  for (size_t i = 0; i < a.parameters.size(); ++i) {
    double diff =
        (a.parameters[i] - b.parameters[i]).abs().max().item<double>();
    double scale = b.parameters[i].abs().max().item<double>();
    EXPECT_LE(diff, rel * scale) << "parameter " << i;
  }
}

TEST_F(TrainerTest, FourMicroBatchesOf256EqualOneStepOf1024) {
  for (const char* optimizer : {"sgd", "lamb", "adamw"}) {
    SCOPED_TRACE(optimizer);
    json base = {{"batch_size", 1024},
                 {"optimizer", {{"name", optimizer}}},
                 {"lr", std::string(optimizer) == "sgd" ? 0.1 : 0.01}};
    RecordingSink full_sink, accum_sink;
    TrialResult full = Run(Config(base), &full_sink);
    base["micro_batch_size"] = 256;
    TrialResult accum = Run(Config(base), &accum_sink);
    ExpectParametersClose(accum, full, 1e-5);
    // The logged loss is the full batch's mean either way.
    EXPECT_NEAR(accum_sink.Named("train_loss")[2].value,
                full_sink.Named("train_loss")[2].value, 1e-5);
  }
}

TEST_F(TrainerTest, SameConfigAndSeedGiveBitIdenticalMetrics) {
  TrialConfig c = Config({{"budget", {{"steps", 40}}},
                          {"eval_every_steps", 20},
                          {"optimizer", {{"name", "lamb"}}},
                          {"micro_batch_size", 128},
                          {"threads", 2}});
  RecordingSink a, b;
  TrialResult ra = Run(c, &a), rb = Run(c, &b);
  ASSERT_EQ(a.rows.size(), b.rows.size());
  for (size_t i = 0; i < a.rows.size(); ++i) {
    if (a.rows[i].name == "samples_per_second") continue;  // wall time
    EXPECT_EQ(a.rows[i].name, b.rows[i].name);
    EXPECT_EQ(a.rows[i].value, b.rows[i].value)
        << a.rows[i].name << " at step " << a.rows[i].step;
  }
  for (size_t i = 0; i < ra.parameters.size(); ++i) {
    EXPECT_TRUE(torch::equal(ra.parameters[i], rb.parameters[i]));
  }
  // A different seed gives a different run.
  c.seed = 8;
  RecordingSink other;
  Run(c, &other);
  EXPECT_NE(other.Named("train_loss")[0].value, a.Named("train_loss")[0].value);
}

TEST_F(TrainerTest, TargetIsInterpolatedBetweenTheEvaluationsThatBracketIt) {
  TrialConfig c =
      Config({{"budget", {{"steps", 200}}},
              {"eval_every_samples", 2560},
              {"optimizer", {{"name", "adamw"}}},
              {"lr", 0.002},
              {"target",
               {{"metric", "val_accuracy"}, {"value", 0.7}, {"stop", true}}}});
  RecordingSink sink;
  TrialResult r = Run(c, &sink);
  auto reached = sink.Named("target_reached_samples");
  ASSERT_EQ(reached.size(), 1u);
  // It stopped at the first evaluation at or above 0.7 (every 2,560 samples
  // = 10 steps at batch 256; the first at step 0) ...
  EXPECT_EQ(r.steps, reached[0].step);
  EXPECT_LT(r.steps, 200);
  auto accuracy = sink.Named("val_accuracy");
  ASSERT_GE(accuracy.size(), 2u);
  EXPECT_EQ(accuracy[0].step, 0);
  EXPECT_EQ(accuracy[1].step, 10);
  EXPECT_GE(accuracy.back().value, 0.7);
  for (size_t i = 0; i + 1 < accuracy.size(); ++i)
    EXPECT_LT(accuracy[i].value, 0.7);
  // ... and the crossing is interpolated linearly between the last two
  // evaluations, recomputed here from the logged series.
  const auto& lo = accuracy[accuracy.size() - 2];
  const auto& hi = accuracy.back();
  const double expected =
      256.0 * (lo.step +
               (0.7 - lo.value) / (hi.value - lo.value) * (hi.step - lo.step));
  EXPECT_NEAR(reached[0].value, expected, 1e-6 * expected);
  EXPECT_GT(reached[0].value, lo.step * 256.0);
  EXPECT_LE(reached[0].value, hi.step * 256.0);
  EXPECT_NEAR(sink.Named("target_reached_steps")[0].value,
              reached[0].value / 256, 1e-9);
  EXPECT_EQ(sink.Named("target_bracket_samples")[0].value, lo.step * 256.0);
  const double seconds = sink.Named("target_reached_seconds")[0].value;
  EXPECT_GT(seconds, 0);
  // The test split, once, when the trial ends; never before.
  auto test = sink.Named("test_accuracy");
  ASSERT_EQ(test.size(), 1u);
  EXPECT_EQ(test[0].step, r.steps);
}

TEST_F(TrainerTest,
       EveryTrainingSampleIsSeenOnceAnEpochAtABatchThatDoesNotDivideIt) {
  // 55,000 training images, batch 4,096: 13.4 steps an epoch. Two epochs
  // are ceil(26.86) = 27 steps; the batches run on across epoch ends, so the
  // first 110,000 samples of the stream are each image exactly twice.
  class Counting : public Task {
   public:
    explicit Counting(std::unique_ptr<Task> inner) : inner_(std::move(inner)) {}
    Result<std::shared_ptr<torch::nn::Module>> BuildModel() override {
      return inner_->BuildModel();
    }
    void To(torch::Device d) override { inner_->To(d); }
    int64_t train_size() const override { return inner_->train_size(); }
    void BeginStep(int64_t step, const torch::Tensor& batch) override {
      seen.push_back(batch.clone());
      inner_->BeginStep(step, batch);
    }
    torch::Tensor Loss(const torch::Tensor& s, int64_t o) override {
      return inner_->Loss(s, o);
    }
    Evaluation Evaluate(Split split) override {
      return inner_->Evaluate(split);
    }
    std::vector<torch::Tensor> seen;

   private:
    std::unique_ptr<Task> inner_;
  };
  TrialConfig c = Config({{"batch_size", 4096},
                          {"budget", {{"steps", nullptr}, {"epochs", 2}}},
                          {"lr", 0.01}});
  EXPECT_EQ(TotalSteps(c, 55000), 27);
  Counting task(MakeImageTask(c, *data_));
  ASSERT_EQ(task.train_size(), 55000);
  RecordingSink sink;
  auto r = RunTrial(c, task, &sink);
  ASSERT_OK(r);
  ASSERT_EQ(task.seen.size(), 27u);
  torch::Tensor all = torch::cat(task.seen);
  ASSERT_EQ(all.size(0), 27 * 4096);
  torch::Tensor counts = torch::bincount(all.slice(0, 0, 110000), {}, 55000);
  EXPECT_EQ(counts.min().item<int64_t>(), 2);
  EXPECT_EQ(counts.max().item<int64_t>(), 2);
  // The epoch metric counts samples: 2 epochs at the second epoch's end.
  auto epoch = sink.Named("epoch");
  ASSERT_EQ(epoch.size(), 2u);
  EXPECT_NEAR(epoch[0].value, 14 * 4096 / 55000.0, 1e-12);
  EXPECT_NEAR(epoch[1].value, 27 * 4096 / 55000.0, 1e-12);
}

TEST_F(TrainerTest, AbsurdLearningRateDiverges) {
  RecordingSink sink;
  TrialResult r =
      Run(Config({{"lr", 1e7},
                  {"budget", {{"steps", 50}}},
                  {"optimizer", {{"name", "sgd"}, {"momentum", 0}}}}),
          &sink);
  EXPECT_EQ(r.outcome, Outcome::kDiverged);
  EXPECT_LT(r.steps, 50);
  EXPECT_THAT(r.message, ::testing::HasSubstr("train_loss"));
}

TEST_F(TrainerTest, BatchOfTheWholeTrainingSetAccumulatesAndLearns) {
  // 55000 = 5 micro-batches of 11000: each step sees every training sample.
  RecordingSink sink;
  TrialResult r = Run(Config({{"batch_size", 55000},
                              {"micro_batch_size", 11000},
                              {"lr", 0.1},
                              {"budget", {{"steps", 4}}}}),
                      &sink);
  EXPECT_EQ(r.outcome, Outcome::kCompleted);
  EXPECT_EQ(r.steps, 4);
  auto loss = sink.Named("train_loss");
  ASSERT_EQ(loss.size(), 4u);
  EXPECT_LT(loss[3].value, loss[0].value);
  // One step per epoch: every step ends with an evaluation.
  auto epoch = sink.Named("epoch");
  ASSERT_EQ(epoch.size(), 4u);
  EXPECT_EQ(epoch[3].value, 4.0);
  EXPECT_EQ(sink.Named("gradient_noise_scale").size(), 4u);
}

TEST_F(TrainerTest, CudaOrAutocastWithoutAGpuIsAClearError) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this LibTorch sees a GPU";
  RecordingSink sink;
  auto r = RunTrial(Config({{"device", "cuda"}}), *data_, &sink);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), ::testing::HasSubstr("device: cuda"));
  r = RunTrial(Config({{"precision", "bf16"}}), *data_, &sink);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), ::testing::HasSubstr("precision: bf16"));
  EXPECT_TRUE(sink.rows.empty());
  // auto is cpu here, and trains.
  EXPECT_EQ(Run(Config({{"device", "auto"}}), &sink).steps, 3);
}

TEST_F(TrainerTest, LrOfEveryStepFollowsTheSchedule) {
  RecordingSink sink;
  Run(Config({{"budget", {{"steps", 12}}},
              {"lr", 0.4},
              {"schedule",
               {{"warmup_steps", 4}, {"decay", "poly"}, {"power", 1}}}}),
      &sink);
  auto lr = sink.Named("lr");
  ASSERT_EQ(lr.size(), 12u);
  EXPECT_DOUBLE_EQ(lr[0].value, 0.1);
  EXPECT_DOUBLE_EQ(lr[3].value, 0.4);
  EXPECT_DOUBLE_EQ(lr[4].value, 0.4);
  EXPECT_DOUBLE_EQ(lr[7].value, 0.4 * (1 - 3.0 / 8));
  // The last step does not run at lr 0.
  EXPECT_DOUBLE_EQ(lr[11].value, 0.4 / 8);
}

TEST_F(TrainerTest, ClippingBoundsTheStepOfSgdAndAdamWExcludesBiasesFromDecay) {
  // Plain SGD clipped to norm 0.01 moves the parameters by exactly lr x 0.01.
  RecordingSink sink;
  TrialConfig c =
      Config({{"budget", {{"steps", 1}}},
              {"lr", 0.5},
              {"optimizer",
               {{"name", "sgd"}, {"momentum", 0}, {"max_grad_norm", 0.01}}}});
  TrialResult clipped = Run(c, &sink);
  // The initial weights: the same seed, and a step too small to move them.
  TrialConfig zero =
      Config({{"budget", {{"steps", 1}}},
              {"lr", 1e-300},
              {"optimizer", {{"name", "sgd"}, {"momentum", 0}}}});
  TrialResult initial = Run(zero, &sink);
  double moved_sq = 0;
  for (size_t i = 0; i < clipped.parameters.size(); ++i) {
    moved_sq += (clipped.parameters[i] - initial.parameters[i])
                    .pow(2)
                    .sum()
                    .item<double>();
  }
  EXPECT_GT(sink.Named("grad_norm")[0].value, 0.01);  // it was clipped
  EXPECT_NEAR(std::sqrt(moved_sq), 0.5 * 0.01, 1e-6);
  // AdamW with a large decay and biases excluded: in one step every bias
  // moves exactly as with no decay at all, every weight as with the decay.
  auto run = [&](bool exclude, double decay) {
    return Run(Config({{"budget", {{"steps", 1}}},
                       {"lr", 0.01},
                       {"optimizer",
                        {{"name", "adamw"},
                         {"weight_decay", decay},
                         {"exclude_bias_and_norm", exclude}}}}),
               &sink);
  };
  TrialResult excluded = run(true, 0.5), plain = run(false, 0.0),
              decayed = run(false, 0.5);
  for (size_t i = 0; i < excluded.parameters.size(); ++i) {
    if (excluded.parameters[i].dim() == 1) {
      EXPECT_TRUE(torch::equal(excluded.parameters[i], plain.parameters[i]))
          << i;
      EXPECT_FALSE(torch::equal(decayed.parameters[i], plain.parameters[i]))
          << i;
    } else {
      EXPECT_TRUE(torch::equal(excluded.parameters[i], decayed.parameters[i]))
          << i;
    }
  }
}

TEST_F(TrainerTest, DiagnosticsNoiseScaleAndPerTensorTrustRatios) {
  RecordingSink sink;
  Run(Config({{"optimizer", {{"name", "lamb"}}},
              {"lr", 0.01},
              {"batch_size", 1024},
              {"micro_batch_size", 256},
              {"budget", {{"steps", 6}}},
              {"diagnostics_every_steps", 3}}),
      &sink);
  ASSERT_EQ(sink.Named("grad_norm").size(), 6u);
  EXPECT_GT(sink.Named("grad_norm")[0].value, 0);
  auto gns = sink.Named("gradient_noise_scale");
  ASSERT_FALSE(gns.empty());
  // Early in training the gradient is large against its noise: B_simple is
  // positive and well below the dataset size.
  EXPECT_GT(gns.back().value, 0);
  EXPECT_LT(gns.back().value, 60000);
  EXPECT_EQ(sink.Named("gns_trace").size(), 6u);
  // Per tensor, on steps 3 and 6: "1.weight" is adapted (a trust ratio),
  // "1.bias" is in the excluded group (none).
  auto ratio = sink.Named("trust_ratio/1.weight");
  ASSERT_EQ(ratio.size(), 2u);
  EXPECT_EQ(ratio[0].step, 3);
  EXPECT_GT(ratio[0].value, 0);
  EXPECT_TRUE(sink.Named("trust_ratio/1.bias").empty());
  auto update = sink.Named("update_norm/1.weight");
  auto weight = sink.Named("weight_norm/1.weight");
  ASSERT_EQ(update.size(), 2u);
  // LAMB moves an adapted tensor by lr x ||w|| (its old norm).
  EXPECT_NEAR(update[0].value / weight[0].value, 0.01, 1e-3);
  EXPECT_EQ(sink.Named("update_norm/1.bias").size(), 2u);
}

TEST_F(TrainerTest, CnnLearns) {
  RecordingSink sink;
  Run(Config({{"model",
               {{"type", "cnn"}, {"channels", {8, 16}}, {"hidden", {32}}}},
              {"optimizer", {{"name", "adamw"}}},
              {"lr", 0.003},
              {"batch_size", 128},
              {"budget", {{"steps", 60}}},
              {"eval_every_steps", 60}}),
      &sink);
  auto accuracy = sink.Named("val_accuracy");
  ASSERT_EQ(accuracy.size(), 1u);
  EXPECT_GT(accuracy[0].value, 0.6);
  ASSERT_EQ(sink.Named("test_accuracy").size(), 1u);
  EXPECT_GT(sink.Named("test_accuracy")[0].value, 0.6);
}

// Runs `overrides` to the end with checkpoints, then resumes from the last
// checkpoint (testing::ExpectResumeReproduces).
void ExpectResumeReproduces(TrainerTest*, json overrides,
                            int64_t expected_resume_step) {
  testing::TempDir dir;
  overrides["checkpoint_path"] = dir.File("ckpt.pt");
  TrialConfig c = TrainerTest::PublicConfig(overrides);
  testing::ExpectResumeReproduces(
      c, [&] { return MakeImageTask(c, TrainerTest::Data()); },
      expected_resume_step);
}

TEST_F(TrainerTest, ResumeMidEpochReproducesTheUninterruptedRun) {
  // 214.8 steps per epoch: the step-20 checkpoint is mid-epoch.
  ExpectResumeReproduces(this,
                         {{"budget", {{"steps", 27}}},
                          {"optimizer", {{"name", "lamb"}}},
                          {"lr", 0.01},
                          {"micro_batch_size", 128},
                          {"eval_every_steps", 9},
                          {"checkpoint_every_steps", 10}},
                         20);
}

TEST_F(TrainerTest, ResumeAcrossAnEpochBoundaryWithBatchNorm) {
  // Batch 6000 on 55,000 images: step 10 takes the last 1,000 of epoch 0
  // and the first 5,000 of epoch 1, so the checkpoint after it holds two
  // epochs' orders, and step 19 draws epoch 2's from the restored RNG.
  ExpectResumeReproduces(
      this,
      {{"model", {{"type", "cnn"}, {"channels", {2}}, {"hidden", {8}}}},
       {"batch_size", 6000},
       {"micro_batch_size", 2000},
       {"budget", {{"steps", 20}}},
       {"optimizer", {{"name", "lars"}}},
       {"lr", 1.0},
       {"eval_every_steps", 6},
       {"checkpoint_every_steps", 10}},
      10);
}

TEST_F(TrainerTest, ResumeRefusesAnotherConfigOrACorruptFile) {
  testing::TempDir dir;
  TrialConfig c = Config({{"budget", {{"steps", 4}}},
                          {"checkpoint_every_steps", 2},
                          {"checkpoint_path", dir.File("ckpt.pt")}});
  RecordingSink sink;
  Run(c, &sink);
  TrialConfig other = c;
  other.fingerprint += " ";  // any change of the config
  auto r = RunTrial(other, *data_, &sink, c.checkpoint_path);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  std::ofstream(dir.File("bad.pt")) << "not a checkpoint";
  r = RunTrial(c, *data_, &sink, dir.File("bad.pt"));
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  r = RunTrial(c, *data_, &sink, dir.File("missing.pt"));
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

// A checkpoint that cannot be written (a full disk; here the file-size
// limit, which fails the write part-way with EFBIG) costs its resume point,
// not the trial: it goes on unchanged, says so as a metric, and leaves no
// partial file behind.
TEST_F(TrainerTest, ACheckpointThatCannotBeWrittenDoesNotStopTheTrial) {
  testing::TempDir dir;
  TrialConfig c = Config({{"budget", {{"steps", 4}}},
                          {"checkpoint_every_steps", 2},
                          {"checkpoint_path", dir.File("ckpt.pt")}});
  RecordingSink full_sink, plain_sink;
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  rlimit small = old;
  small.rlim_cur = 4096;
  auto previous = signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  auto full = RunTrial(c, *data_, &full_sink);
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, previous);
  ASSERT_OK(full);
  EXPECT_EQ(full->outcome, Outcome::kCompleted);
  EXPECT_EQ(full->steps, 4);
  const auto failed = full_sink.Named("checkpoint_failed");
  ASSERT_EQ(failed.size(), 1u);  // step 2; none after the last step
  EXPECT_EQ(failed[0].step, 2);
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  // Training itself is the same as with the checkpoint written.
  TrialResult plain = Run(c, &plain_sink);
  EXPECT_TRUE(std::filesystem::exists(dir.File("ckpt.pt")));
  ExpectParametersClose(*full, plain, 0);
  ASSERT_EQ(full_sink.Named("train_loss").size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(full_sink.Named("train_loss")[i].value,
              plain_sink.Named("train_loss")[i].value);
  }
}

// The decoded-dataset cache: the first load writes it, later loads map it;
// either way the tensors are the decoded ones, bit for bit. A damaged cache
// is decoded around and replaced, never trusted.
TEST_F(TrainerTest, DatasetCacheHoldsTheDecodedBitsAndSurvivesDamage) {
  megabatch::testing::TempDir cache;
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  auto expect_decoded = [](const ImageDataset& d) {
    const ImageDataset& want = Data();
    EXPECT_TRUE(torch::equal(d.train_images, want.train_images));
    EXPECT_TRUE(torch::equal(d.train_labels, want.train_labels));
    EXPECT_TRUE(torch::equal(d.test_images, want.test_images));
    EXPECT_TRUE(torch::equal(d.test_labels, want.test_labels));
  };
  auto cold = LoadFashionMnistCached(dir, cache.path().string());
  ASSERT_OK(cold);
  expect_decoded(*cold);
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(cache.path())) {
    files.push_back(e.path());
  }
  ASSERT_EQ(files.size(), 1u) << "one cache file, no temporaries left behind";
  EXPECT_EQ(files[0].extension(), ".f32");
  auto warm = LoadFashionMnistCached(dir, cache.path().string());
  ASSERT_OK(warm);
  expect_decoded(*warm);
  // Mapped copy-on-write: writing a tensor changes this process's copy only.
  warm->train_images[0].fill_(7.0f);
  auto again = LoadFashionMnistCached(dir, cache.path().string());
  ASSERT_OK(again);
  expect_decoded(*again);

  const auto size = std::filesystem::file_size(files[0]);
  std::filesystem::resize_file(files[0], size / 2);
  auto truncated = LoadFashionMnistCached(dir, cache.path().string());
  ASSERT_OK(truncated);
  expect_decoded(*truncated);
  EXPECT_EQ(std::filesystem::file_size(files[0]), size)
      << "the damaged cache is rewritten";
  {
    std::ofstream garbage(files[0], std::ios::binary | std::ios::trunc);
    garbage << std::string(size, 'x');
  }
  auto overwritten = LoadFashionMnistCached(dir, cache.path().string());
  ASSERT_OK(overwritten);
  expect_decoded(*overwritten);
}

// A cache directory that cannot be made costs the cache, not the trial.
TEST_F(TrainerTest, DatasetCacheThatCannotBeWrittenStillLoads) {
  megabatch::testing::TempDir tmp;
  { std::ofstream file(tmp.File("not-a-dir")); }
  auto d = LoadFashionMnistCached("/usr/share/datasets/fashion-mnist",
                                  tmp.File("not-a-dir") + "/cache");
  ASSERT_OK(d);
  EXPECT_TRUE(torch::equal(d->train_images, Data().train_images));
  auto missing =
      LoadFashionMnistCached(tmp.File("no-dataset"), tmp.path().string());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace megabatch::trainer
