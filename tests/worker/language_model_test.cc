// The language-model tasks through the real trainer: BERT masking, learning,
// gradient accumulation, LAMB's exclusions and checkpoint/resume for
// char_lstm and tiny_bert on Debian's fortunes. tiny_bert runs the
// megabatch-tokenize built beside this test (MEGABATCH_TOKENIZE) with a cache
// in the build tree, so its tokenizer is trained once per build.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/trainer_testing.h"
#include "worker/trainer/data/tokenizer.h"
#include "worker/trainer/models/language_models.h"
#include "worker/trainer/optim/registry.h"
#include "worker/trainer/tasks/masking.h"
#include "worker/trainer/trainer.h"

namespace megabatch::trainer {
namespace {

using nlohmann::json;
using testing::RecordingSink;

class LanguageModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ::setenv("MEGABATCH_TOKENIZE", MEGABATCH_TOKENIZE_BIN, 1);
    ::setenv("MEGABATCH_CACHE_DIR", MEGABATCH_TEST_CACHE_DIR, 1);
  }

  // Small models and batches: each test runs in seconds on two cores.
  static TrialConfig Config(const std::string& type, json overrides) {
    json model =
        type == "char_lstm"
            ? json{{"type", type},
                   {"hidden", 64},
                   {"embedding", 16},
                   {"seq_len", 32}}
            : json{{"type", type}, {"hidden", 64},  {"heads", 2},
                   {"ffn", 128},   {"seq_len", 32}, {"vocab_size", 512}};
    json doc = {{"seed", 3},
                {"model", model},
                {"dataset", {{"validation_fraction", 0.01}}},
                {"optimizer", {{"name", "lamb"}}},
                {"batch_size", 32},
                {"lr", 0.01},
                {"budget", {{"steps", 4}}},
                {"threads", 2}};
    doc.merge_patch(overrides);
    auto c = ParseTrialConfig(doc);
    EXPECT_OK(c);
    return *c;
  }

  static std::unique_ptr<Task> NewTask(const TrialConfig& c) {
    auto task = MakeTask(c);
    EXPECT_OK(task);
    return std::move(*task);
  }

  static TrialResult Run(const TrialConfig& c, RecordingSink* sink) {
    auto task = NewTask(c);
    auto r = RunTrial(c, *task, sink);
    EXPECT_OK(r);
    return *r;
  }
};

TEST(Masking, ChoosesFifteenPercentAndApplies801010) {
  const int64_t vocab = 1000, first = 4, mask = 3;
  at::Generator data = StepGenerator(1, 1);
  torch::Tensor tokens =
      torch::randint(first, vocab, {1024, 128}, data, torch::kInt64);
  // Every 16th position is a separator, never chosen.
  tokens.index_put_(
      {torch::indexing::Slice(), torch::indexing::Slice(0, 128, 16)}, 2);
  at::Generator g = StepGenerator(7, 11);
  MaskedTokens m = MaskTokens(tokens, {0.15, mask, first, vocab}, g);
  const torch::Tensor ordinary = tokens.ge(first);
  const double chosen = m.chosen.sum().item<double>();
  EXPECT_NEAR(chosen / ordinary.sum().item<double>(), 0.15, 0.003);
  EXPECT_EQ(m.chosen.logical_and(ordinary.logical_not()).sum().item<int64_t>(),
            0);
  // Not chosen: unchanged.
  EXPECT_TRUE(torch::equal(m.inputs.masked_select(m.chosen.logical_not()),
                           tokens.masked_select(m.chosen.logical_not())));
  const torch::Tensor in = m.inputs.masked_select(m.chosen);
  const torch::Tensor was = tokens.masked_select(m.chosen);
  const double masked = in.eq(mask).sum().item<double>();
  const double kept = in.eq(was).sum().item<double>();
  const double replaced = chosen - masked - kept;
  // ~19,000 chosen: three standard deviations of a 10% share are ~0.65%.
  EXPECT_NEAR(masked / chosen, 0.8, 0.01);
  EXPECT_NEAR(replaced / chosen, 0.1 * (1 - 1.0 / (vocab - first)), 0.008);
  EXPECT_NEAR(kept / chosen, 0.1, 0.008);
  EXPECT_TRUE(in.ge(first).logical_or(in.eq(mask)).all().item<bool>());
  // Same (seed, step): same masks; another step: others.
  at::Generator again = StepGenerator(7, 11), next = StepGenerator(7, 12);
  EXPECT_TRUE(torch::equal(
      MaskTokens(tokens, {0.15, mask, first, vocab}, again).inputs, m.inputs));
  EXPECT_FALSE(torch::equal(
      MaskTokens(tokens, {0.15, mask, first, vocab}, next).chosen, m.chosen));
}

TEST_F(LanguageModelTest, CharLstmLowersValidationBitsPerCharacter) {
  RecordingSink sink;
  Run(Config("char_lstm", {{"budget", {{"steps", 40}}},
                           {"eval_every_steps", 20},
                           {"optimizer", {{"name", "adamw"}}},
                           {"lr", 0.01}}),
      &sink);
  auto bpc = sink.Named("val_bpc");
  auto loss = sink.Named("val_loss");
  ASSERT_EQ(bpc.size(), 2u);
  EXPECT_NEAR(bpc[1].value, loss[1].value / std::log(2.0), 1e-12);
  // Uniform over bytes is 8 bits; English text is well under 5 even early.
  EXPECT_LT(bpc[0].value, 5.0);
  EXPECT_LT(bpc[1].value, bpc[0].value - 0.2);
  EXPECT_GT(sink.Named("val_accuracy")[1].value, 0.2);
  // The corpus has a validation split only: no test figures.
  EXPECT_TRUE(sink.Named("test_loss").empty());
}

TEST_F(LanguageModelTest, TinyBertLowersValidationMlmLoss) {
  RecordingSink sink;
  Run(Config("tiny_bert", {{"budget", {{"steps", 40}}},
                           {"eval_every_steps", 20},
                           {"lr", 0.02}}),
      &sink);
  auto loss = sink.Named("val_mlm_loss");
  auto accuracy = sink.Named("val_mlm_accuracy");
  ASSERT_EQ(loss.size(), 2u);
  EXPECT_EQ(sink.Named("val_loss")[1].value, loss[1].value);
  EXPECT_EQ(sink.Named("val_accuracy")[1].value, accuracy[1].value);
  EXPECT_LT(loss[0].value, std::log(512.0));  // below uniform after 20 steps
  EXPECT_LT(loss[1].value, loss[0].value - 0.2);
  EXPECT_GT(accuracy[1].value, 0.05);
}

// Accumulating micro-batches gives the full batch's loss and gradient: the
// MLM loss is normalised by the whole batch's chosen tokens.
TEST_F(LanguageModelTest, AccumulationMatchesTheFullBatch) {
  for (const char* type : {"char_lstm", "tiny_bert"}) {
    RecordingSink full, accumulated;
    Run(Config(type, json::object()), &full);
    Run(Config(type, {{"micro_batch_size", 8}}), &accumulated);
    auto a = full.Named("train_loss"), b = accumulated.Named("train_loss");
    ASSERT_EQ(a.size(), 4u);
    ASSERT_EQ(b.size(), 4u);
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_NEAR(a[i].value, b[i].value, 1e-4 * a[i].value)
          << type << " step " << a[i].step;
    }
    EXPECT_FALSE(accumulated.Named("gradient_noise_scale").empty()) << type;
  }
}

TEST_F(LanguageModelTest, LambExcludesBiasesAndLayerNormsOfBothModels) {
  TinyBert bert(TinyBertOptions{512, 32, 64, 2, 2, 128, true});
  ParameterSplit split = SplitBiasAndNorm(*bert);
  std::set<const c10::TensorImpl*> excluded;
  for (const auto& p : split.excluded) excluded.insert(p.unsafeGetTensorImpl());
  int norms = 0;
  for (const auto& item : bert->named_parameters()) {
    const std::string& name = item.key();
    const bool bias_or_norm = name.find("bias") != std::string::npos ||
                              name.find("norm") != std::string::npos;
    norms += name.find("norm") != std::string::npos;
    EXPECT_EQ(excluded.count(item.value().unsafeGetTensorImpl()),
              bias_or_norm ? 1u : 0u)
        << name;
  }
  EXPECT_EQ(norms,
            2 * (2 * 2 + 2));  // weight and bias of 2 per layer + embed + final
  // Without biases only the LayerNorms are left out.
  TinyBert no_bias(TinyBertOptions{512, 32, 64, 2, 2, 128, false});
  EXPECT_EQ(SplitBiasAndNorm(*no_bias).excluded.size(),
            static_cast<size_t>(norms));
  for (const auto& item : no_bias->named_parameters()) {
    if (item.key().find("bias") != std::string::npos) {
      EXPECT_NE(item.key().find("norm"), std::string::npos) << item.key();
    }
  }
  CharLstm lstm(CharLstmOptions{256, 16, 64, 1});
  for (const auto& item : lstm->named_parameters()) {
    bool in_excluded = false;
    for (const auto& p : SplitBiasAndNorm(*lstm).excluded) {
      in_excluded |=
          p.unsafeGetTensorImpl() == item.value().unsafeGetTensorImpl();
    }
    EXPECT_EQ(in_excluded, item.key().find("bias") != std::string::npos)
        << item.key();
  }
}

TEST_F(LanguageModelTest, ResumeReproducesBothModelsExactly) {
  for (const char* type : {"char_lstm", "tiny_bert"}) {
    SCOPED_TRACE(type);
    testing::TempDir dir;
    TrialConfig c = Config(type, {{"budget", {{"steps", 9}}},
                                  {"eval_every_steps", 3},
                                  {"micro_batch_size", 16},
                                  {"diagnostics_every_steps", 4},
                                  {"checkpoint_every_steps", 5},
                                  {"checkpoint_path", dir.File("ckpt.pt")}});
    testing::ExpectResumeReproduces(
        c, [&] { return NewTask(c); }, 5);
  }
}

TEST_F(LanguageModelTest, BadTextConfigsNameTheField) {
  auto missing =
      MakeTask(Config("char_lstm", {{"dataset", {{"path", "/nonexistent"}}}}));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("dataset.path"), std::string::npos);
  auto bert_missing =
      MakeTask(Config("tiny_bert", {{"dataset", {{"path", "/nonexistent"}}}}));
  EXPECT_EQ(bert_missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(bert_missing.status().message().find("dataset.path"),
            std::string::npos);
  auto heads = ParseTrialConfig(
      {{"model", {{"type", "tiny_bert"}, {"hidden", 64}, {"heads", 3}}}});
  EXPECT_EQ(heads.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(heads.status().message().find("model.heads"), std::string::npos);
  auto wrong = ParseTrialConfig({{"model", {{"type", "char_lstm"}}},
                                 {"dataset", {{"name", "fashion_mnist"}}}});
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("dataset.name"), std::string::npos);
  // A batch larger than the training set.
  TrialConfig big = Config("char_lstm", {{"batch_size", 1 << 22}});
  auto task = NewTask(big);
  RecordingSink sink;
  auto r = RunTrial(big, *task, &sink);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("batch_size"), std::string::npos);
}

}  // namespace
}  // namespace megabatch::trainer
