// Data-parallel trials: real megabatch-trainer processes forming a c10d
// Gloo group over loopback, compared with the same trial on one rank.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tests/testing/process.h"
#include "tests/testing/temp_dir.h"

namespace megabatch {
namespace {

using ::testing::HasSubstr;
using testing::Process;
using testing::RunCommand;
using json = nlohmann::json;

// Step -> metric -> value, from the trainer's JSON lines.
using Curve = std::map<int64_t, std::map<std::string, double>>;

Curve ParseCurve(const std::string& out) {
  Curve curve;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    json d = json::parse(line, nullptr, false);
    if (!d.is_object() || !d.contains("step")) continue;
    for (const auto& [name, value] : d["metrics"].items()) {
      if (value.is_number())
        curve[d["step"].get<int64_t>()][name] = value.get<double>();
    }
  }
  return curve;
}

class DataParallelTest : public ::testing::Test {
 protected:
  // LAMB on an MLP, global batch 256 in micro-batches of 64, with per-tensor
  // weight norms every 10 steps (the parameters, seen from outside).
  json Config(int steps) const {
    return json{{"trial_id", 1},
                {"seed", 11},
                {"model", {{"type", "mlp"}, {"hidden", {64}}}},
                {"optimizer", {{"name", "lamb"}, {"weight_decay", 0.01}}},
                {"batch_size", 256},
                {"micro_batch_size", 64},
                {"lr", 0.01},
                {"budget", {{"steps", steps}}},
                {"eval_every_steps", 10},
                {"diagnostics_every_steps", 10},
                {"threads", 1}};
  }

  std::string Write(const std::string& name, const json& config) {
    std::string path = dir_.File(name);
    std::ofstream(path) << config.dump();
    return path;
  }

  // The config of `rank` in a `world`-rank group on `port`.
  static json Ranked(json config, int world, int rank, int port,
                     int timeout_s = 60) {
    config["distributed"] = {{"world_size", world},
                             {"rank", rank},
                             {"host", "127.0.0.1"},
                             {"port", port},
                             {"timeout_s", timeout_s}};
    return config;
  }

  // Runs `world` ranks of `config` to completion; rank 0's output.
  testing::CommandResult RunRanks(const json& config, int world,
                                  const std::string& tag) {
    const int port = testing::FreePort();
    std::vector<std::unique_ptr<Process>> others;
    for (int r = 1; r < world; ++r) {
      others.push_back(std::make_unique<Process>(
          std::vector<std::string>{
              MEGABATCH_TRAINER_BIN, "--config",
              Write(tag + "-rank" + std::to_string(r) + ".json",
                    Ranked(config, world, r, port))},
          dir_.File(tag + "-rank" + std::to_string(r) + ".log")));
    }
    auto rank0 = RunCommand(
        {MEGABATCH_TRAINER_BIN, "--config",
         Write(tag + "-rank0.json", Ranked(config, world, 0, port))});
    for (auto& p : others)
      EXPECT_EQ(p->Wait(std::chrono::seconds(60)), 0) << p->Log();
    return rank0;
  }

  static void ExpectSameCurve(const Curve& a, const Curve& b) {
    ASSERT_EQ(a.size(), b.size());
    int compared = 0;
    for (const auto& [step, metrics] : a) {
      for (const auto& [name, value] : metrics) {
        if (name == "samples_per_second" || name == "allreduce_seconds")
          continue;
        ASSERT_TRUE(b.at(step).count(name)) << name << " at step " << step;
        EXPECT_NEAR(b.at(step).at(name), value,
                    1e-5 * std::max(1.0, std::abs(value)))
            << name << " at step " << step;
        ++compared;
      }
    }
    EXPECT_GT(compared, 50);
  }

  testing::TempDir dir_;
};

TEST_F(DataParallelTest, TwoRanksTrainExactlyLikeOneWithTheSameGlobalBatch) {
  const json config = Config(30);
  auto one = RunCommand(
      {MEGABATCH_TRAINER_BIN, "--config", Write("one.json", config)});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  auto two = RunRanks(config, 2, "two");
  ASSERT_EQ(two.exit_code, 0) << two.err;
  const Curve a = ParseCurve(one.out), b = ParseCurve(two.out);
  ExpectSameCurve(a, b);
  // The weights themselves (their per-tensor norms) match too.
  EXPECT_TRUE(b.at(30).count("weight_norm/1.weight"));
  // Rank 0 reports, with the time its all-reduces took.
  EXPECT_GT(b.at(5).at("allreduce_seconds"), 0);
  EXPECT_THAT(two.err, HasSubstr("rank 0 of 2 joined"));
}

// A user's TorchScript language model on a token file (docs/models.md):
// its windows are drawn from (seed, step), so two ranks see the samples one
// rank sees, and train alike.
TEST_F(DataParallelTest, TwoRanksOfATorchScriptLanguageModelTrainLikeOne) {
  const std::string script = dir_.File("export.py");
  std::ofstream(script) << R"py(
import sys, numpy as np, torch, torch.nn as nn
class Lm(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(40, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 40)
    def forward(self, tokens):
        return self.head(self.norm(torch.tanh(self.embed(tokens))))
torch.manual_seed(0)
torch.jit.save(torch.jit.script(Lm()), sys.argv[1] + '/lm.pt')
np.tile(np.arange(40, dtype=np.uint16), 200).tofile(sys.argv[1] + '/tokens.bin')
)py";
  ASSERT_EQ(
      std::system(
          ("/usr/bin/python3 " + script + " " + dir_.path().string()).c_str()),
      0);
  json config = Config(20);
  config["model"] = {{"type", "torchscript"}, {"path", dir_.File("lm.pt")}};
  config["dataset"] = {{"kind", "language_model"},
                       {"train", {{"tokens", dir_.File("tokens.bin")}}},
                       {"val_fraction", 0.1},
                       {"seq_len", 16}};
  config["batch_size"] = 64;
  config["micro_batch_size"] = 16;
  auto one = RunCommand(
      {MEGABATCH_TRAINER_BIN, "--config", Write("lm-one.json", config)});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  auto two = RunRanks(config, 2, "lm-two");
  ASSERT_EQ(two.exit_code, 0) << two.err;
  const Curve a = ParseCurve(one.out), b = ParseCurve(two.out);
  ExpectSameCurve(a, b);
  EXPECT_TRUE(b.at(20).count("weight_norm/embed.weight"));
  EXPECT_TRUE(b.at(20).count("val_perplexity"));
}

TEST_F(DataParallelTest, ACheckpointFromTwoRanksResumesOnOne) {
  json config = Config(30);
  config["checkpoint_every_steps"] = 10;
  config["checkpoint_path"] = dir_.File("whole.pt");
  auto whole = RunCommand(
      {MEGABATCH_TRAINER_BIN, "--config", Write("whole.json", config)});
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  // Two ranks train and checkpoint at steps 10 and 20 (rank 0 writes).
  json first = config;
  first["checkpoint_path"] = dir_.File("dp.pt");
  const int port = testing::FreePort();
  Process rank1({MEGABATCH_TRAINER_BIN, "--config",
                 Write("ck1.json", Ranked(first, 2, 1, port))},
                dir_.File("ck1.log"));
  auto rank0 = RunCommand({MEGABATCH_TRAINER_BIN, "--config",
                           Write("ck0.json", Ranked(first, 2, 0, port))});
  ASSERT_EQ(rank0.exit_code, 0) << rank0.err;
  ASSERT_EQ(rank1.Wait(std::chrono::seconds(60)), 0) << rank1.Log();
  // One rank resumes from the step-20 checkpoint: the rest of the curve is
  // the uninterrupted one-rank run's.
  config["checkpoint_path"] = dir_.File("resumed.pt");
  auto resumed = RunCommand({MEGABATCH_TRAINER_BIN, "--config",
                             Write("resume.json", config), "--resume",
                             dir_.File("dp.pt")});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  Curve expected = ParseCurve(whole.out);
  for (auto it = expected.begin(); it != expected.end();) {
    it = it->first <= 20 ? expected.erase(it) : std::next(it);
  }
  ExpectSameCurve(expected, ParseCurve(resumed.out));
}

TEST_F(DataParallelTest, ALostRankEndsTheOtherPromptly) {
  // Rank 1 is killed mid-trial: rank 0's next all-reduce fails, well within
  // its timeout, and it exits as failed instead of hanging.
  json config = Config(100000);
  const int port = testing::FreePort();
  Process rank0({MEGABATCH_TRAINER_BIN, "--config",
                 Write("l0.json", Ranked(config, 2, 0, port, 60))},
                dir_.File("l0.log"));
  Process rank1({MEGABATCH_TRAINER_BIN, "--config",
                 Write("l1.json", Ranked(config, 2, 1, port, 60))},
                dir_.File("l1.log"));
  ASSERT_TRUE(testing::WaitUntil(
      [&] { return rank0.Log().find("\"step\":5}") != std::string::npos; },
      std::chrono::seconds(60)))
      << rank0.Log();
  const auto killed = std::chrono::steady_clock::now();
  rank1.Kill(SIGKILL);
  EXPECT_EQ(rank0.Wait(std::chrono::seconds(30)), 1) << rank0.Log();
  EXPECT_LT(std::chrono::steady_clock::now() - killed,
            std::chrono::seconds(30));
  EXPECT_THAT(rank0.Log(), HasSubstr("all-reduce failed"));
}

TEST_F(DataParallelTest, ARankAloneAtTheRendezvousGivesUpAfterItsTimeout) {
  const auto start = std::chrono::steady_clock::now();
  auto alone = RunCommand(
      {MEGABATCH_TRAINER_BIN, "--config",
       Write("alone.json", Ranked(Config(10), 2, 0, testing::FreePort(), 3))},
      std::chrono::seconds(60));
  EXPECT_EQ(alone.exit_code, 1) << alone.err;
  EXPECT_THAT(alone.out + alone.err, HasSubstr("rendezvous 127.0.0.1:"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

TEST_F(DataParallelTest, BadDistributedFieldsAreNamed) {
  struct Case {
    json distributed;
    std::string says;
  };
  const Case cases[] = {
      {{{"world_size", 2}, {"rank", 2}, {"port", 1234}}, "distributed.rank"},
      {{{"world_size", 2}, {"rank", 0}, {"port", 0}}, "distributed.port"},
      {{{"world_size", 0}}, "distributed.world_size"},
      {{{"world_size", 3}, {"rank", 0}, {"port", 1234}},
       "micro_batch_size x world_size"},
  };
  for (const Case& c : cases) {
    json config = Config(10);
    config["distributed"] = c.distributed;
    auto r = RunCommand(
        {MEGABATCH_TRAINER_BIN, "--config", Write("bad.json", config)});
    EXPECT_EQ(r.exit_code, 2) << c.says;
    EXPECT_THAT(r.err, HasSubstr(c.says));
  }
}

}  // namespace
}  // namespace megabatch
