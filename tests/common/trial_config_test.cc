// The trial config's one definition (common/trial_config.h): every spec the
// project ships expands into configs the trainer reads back unchanged, and
// the spec parser and the trainer refuse the same bad values with the same
// message.
#include "common/trial_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "server/spec/sweep_spec.h"
#include "tests/testing/shipped_specs.h"
#include "tests/testing/status_matchers.h"

namespace megabatch {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Specs that reach the fields the shipped experiments leave alone.
const char* const kMoreSpecs[] = {
    R"(name: text
model: {type: char_lstm, hidden: 32, seq_len: 16, embedding: 8}
optimizers: [{name: lamb}, {name: adamw, weight_decay: 0.1}]
batch_sizes: [16, 32]
base: {lr: 0.01, batch_size: 16}
lr_scaling: sqrt
budget: {samples: 4096}
schedule: {warmup_steps: 3, decay: cosine, warmup_from: base}
target: {metric: val_bpc, value: 4, stop: true}
noise_scale: always
eval_every_samples: 1024
)",
    R"(name: bert
model: {type: tiny_bert, hidden: 32, layers: 1, heads: 2, ffn: 64, seq_len: 16, vocab_size: 512, bias: false}
optimizers: [{name: lamb}]
batch_sizes: [32, 64]
micro_batch_size: 16
ranks_per_trial: 2
base: {lr: 0.001}
budget: {steps: 10}
schedule: {warmup_epochs: 0.5, decay: poly, power: 2}
checkpoint_every_steps: 5
diagnostics_every_steps: 5
divergence_factor: 4
dataset: {validation_fraction: 0.1}
)",
    R"(name: cnn
model: {type: cnn, channels: [8], hidden: [16]}
optimizers: [{name: lars, trust_coefficient: 0.01}, {name: sgd, momentum: 0.9}]
batch_sizes: [64]
base: {lr: 0.1}
lr_multipliers: [0.5, 1]
seeds: [1, 2]
budget: {epochs: 0.5}
eval_every_steps: 10
device: cpu
)",
};

// Every config a sweep's trials run from, as the worker hands it to the
// trainer: ids from the store, a rendezvous per rank, the worker's fields.
std::vector<json> RunnableConfigs(const spec::SweepSpec& sweep) {
  std::vector<json> out;
  for (const spec::TrialSpec& t : spec::ExpandSweep(sweep)) {
    for (int rank = 0; rank < t.ranks; ++rank) {
      json config = t.config;
      SetCoordinatorIds(&config, 1000 + t.index, 7);
      if (t.ranks > 1) {
        Rendezvous r;
        r.world_size = t.ranks;
        r.rank = rank;
        r.host = "10.0.0.1";
        r.port = 29500;
        SetRendezvous(&config, r);
      }
      SetWorkerFields(&config, 2, "/tmp/trial/checkpoint.pt");
      out.push_back(config);
    }
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> AllSpecs() {
  std::vector<std::pair<std::string, std::string>> specs;
  for (const auto& entry :
       std::filesystem::directory_iterator(MEGABATCH_EXPERIMENTS_DIR)) {
    if (entry.path().extension() == ".yaml") {
      specs.emplace_back(entry.path().filename().string(),
                         testing::AsSubmitted(ReadFile(entry.path())));
    }
  }
  for (const char* text : kMoreSpecs) specs.emplace_back("inline", text);
  return specs;
}

TEST(TrialConfigTest, EveryShippedSpecExpandsIntoConfigsTheTrainerReadsBack) {
  size_t configs = 0;
  const auto specs = AllSpecs();
  ASSERT_GE(specs.size(), 10u);
  for (const auto& [name, text] : specs) {
    SCOPED_TRACE(name);
    ASSERT_OK_AND_ASSIGN(spec::SweepSpec sweep, spec::ParseSweepSpec(text));
    ASSERT_OK(spec::CheckTrialConfigs(spec::ExpandSweep(sweep)));
    for (const json& config : RunnableConfigs(sweep)) {
      ASSERT_OK_AND_ASSIGN(TrialConfig read, ParseTrialConfig(config));
      EXPECT_EQ(read.batch_size, config["batch_size"].get<int64_t>());
      EXPECT_EQ(read.lr, config["lr"].get<double>());
      EXPECT_EQ(read.optimizer, config["optimizer"]);
      EXPECT_EQ(read.threads, 2);
      EXPECT_EQ(read.trial_id, config["trial_id"].get<int64_t>());
      // Written out and read again, nothing changes.
      const json written = TrialConfigToJson(read);
      ASSERT_OK_AND_ASSIGN(TrialConfig again, ParseTrialConfig(written));
      EXPECT_EQ(TrialConfigToJson(again), written);
      ++configs;
    }
  }
  EXPECT_GT(configs, 100u);
}

TEST(TrialConfigTest, TheSpecAndTheTrainerRefuseABadValueWithOneMessage) {
  const std::string base = R"(name: bad
model: {type: char_lstm, hidden: 16, seq_len: 8}
optimizers: [{name: lamb}]
batch_sizes: [8]
base: {lr: 0.01}
budget: {steps: 2}
)";
  ASSERT_OK_AND_ASSIGN(spec::SweepSpec good, spec::ParseSweepSpec(base));
  const json config = spec::ExpandSweep(good)[0].config;
  struct Case {
    std::string yaml;  // appended to the spec
    json patch;        // merged into the trial's config
    std::string message;
  };
  const std::vector<Case> cases = {
      {"divergence_factor: 1\n",
       {{"divergence_factor", 1}},
       "divergence_factor: must be > 1, got 1"},
      {"noise_scale: sometimes\n",
       {{"noise_scale", "sometimes"}},
       "noise_scale: unknown value 'sometimes'; supported: auto, always, off"},
      {"device: tpu\n",
       {{"device", "tpu"}},
       "device: unknown value 'tpu'; supported: auto, cpu, cuda"},
      {"precision: fp8\n",
       {{"precision", "fp8"}},
       "precision: unknown value 'fp8'; supported: fp32, bf16, fp16"},
      {"schedule: {decay: linear}\n",
       {{"schedule", {{"decay", "linear"}}}},
       "schedule.decay: unknown value 'linear'; supported: constant, poly, "
       "cosine"},
      {"schedule: {power: 0}\n",
       {{"schedule", {{"power", 0}}}},
       "schedule.power: must be > 0, got 0"},
      {"schedule: {warmup_steps: 1, warmup_epochs: 1}\n",
       {{"schedule", {{"warmup_steps", 1}, {"warmup_epochs", 1}}}},
       "schedule: give warmup_epochs or warmup_steps, not both"},
      {"dataset: {validation_fraction: 1}\n",
       {{"dataset", {{"validation_fraction", 1}}}},
       "dataset.validation_fraction: must be in (0, 1), got 1"},
      {"divergense_factor: 3\n",
       {{"divergense_factor", 3}},
       "divergense_factor: unknown field"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.yaml);
    Result<spec::SweepSpec> from_spec = spec::ParseSweepSpec(base + c.yaml);
    json patched = config;
    patched.merge_patch(c.patch);
    Result<TrialConfig> from_config = ParseTrialConfig(patched);
    ASSERT_FALSE(from_spec.ok());
    ASSERT_FALSE(from_config.ok());
    EXPECT_EQ(from_spec.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(from_config.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(from_spec.status().message(), c.message);
    EXPECT_EQ(from_config.status().message(), c.message);
  }
}

TEST(TrialConfigTest, UnknownFieldsAreRefusedAtEveryLevel) {
  for (const json& doc :
       {json{{"schedule", {{"decay_steps", 3}}}},
        json{{"budget", {{"hours", 1}}}},
        json{{"model", {{"type", "mlp"}, {"heads", 2}}}},
        json{{"optimizer", {{"name", "lamb"}, {"nesterov", true}}}},
        json{{"distributed", {{"world_size", 1}, {"backend", "mpi"}}}},
        json{{"target", {{"metric", "val_loss"}, {"value", 1}, {"k", 1}}}}}) {
    SCOPED_TRACE(doc.dump());
    Result<TrialConfig> c = ParseTrialConfig(doc);
    ASSERT_FALSE(c.ok());
    EXPECT_THAT(c.status().message(), HasSubstr("unknown field"));
  }
}

TEST(TrialConfigTest, EachSideSetsOnlyItsOwnFields) {
  for (const TrialConfigField& f : kTrialConfigFields) {
    SCOPED_TRACE(std::string(f.path));
    EXPECT_FALSE(f.meaning.empty());
    if (f.has_default && f.type != FieldType::kObject) {
      // Every default passes its own check.
      EXPECT_OK(CheckTrialConfigValue(f.path, TrialConfigDefault(f)));
    }
  }
  json config = json::object();
  SetCoordinatorIds(&config, 3, 4);
  SetRendezvous(&config, Rendezvous{2, 1, "h", 5, 6});
  SetWorkerFields(&config, 3, "/c.pt");
  for (const auto& [key, value] : config.items()) {
    const TrialConfigField* f = FindTrialConfigField(key);
    ASSERT_NE(f, nullptr) << key;
    EXPECT_NE(f->set_by, SetBy::kSpec) << key;
  }
  // What the worker sets and the rendezvous never change a trial's
  // fingerprint (a checkpoint resumes on any host, under any world size).
  json spec_only = {{"batch_size", 4}, {"lr", 0.1}};
  ASSERT_OK_AND_ASSIGN(TrialConfig bare, ParseTrialConfig(spec_only));
  json full = spec_only;
  SetWorkerFields(&full, 8, "/elsewhere.pt");
  SetRendezvous(&full, Rendezvous{1, 0, "h", 5, 6});
  ASSERT_OK_AND_ASSIGN(TrialConfig hosted, ParseTrialConfig(full));
  EXPECT_EQ(hosted.threads, 8);
  EXPECT_EQ(hosted.fingerprint, bare.fingerprint);
  full["dataset"] = {{"cache_dir", "/cache"}};
  ASSERT_OK_AND_ASSIGN(TrialConfig cached, ParseTrialConfig(full));
  EXPECT_EQ(json::parse(cached.fingerprint)["dataset"], json::object());
}

TEST(TrialConfigTest, DocsListEveryFieldWithItsSideAndDefault) {
  // docs/running.md's table: | `path` | type | default | range | side | ...
  std::istringstream docs(ReadFile(MEGABATCH_RUNNING_DOC));
  std::map<std::string, std::vector<std::string>> rows;
  for (std::string line; std::getline(docs, line);) {
    if (line.rfind("| `", 0) != 0) continue;
    std::vector<std::string> cells;
    std::istringstream cols(line.substr(1));
    for (std::string cell; std::getline(cols, cell, '|');) {
      const size_t a = cell.find_first_not_of(' ');
      const size_t b = cell.find_last_not_of(' ');
      cells.push_back(a == std::string::npos ? "" : cell.substr(a, b - a + 1));
    }
    if (cells.size() < 6) continue;
    rows[cells[0].substr(1, cells[0].size() - 2)] = cells;
  }
  const char* sides[] = {"spec", "coordinator", "worker"};
  for (const TrialConfigField& f : kTrialConfigFields) {
    SCOPED_TRACE(std::string(f.path));
    auto row = rows.find(std::string(f.path));
    ASSERT_NE(row, rows.end()) << "docs/running.md does not list it";
    EXPECT_EQ(row->second[4], sides[static_cast<int>(f.set_by)]);
    if (f.has_default && f.type == FieldType::kString) {
      EXPECT_EQ(row->second[2], TrialConfigDefault(f).get<std::string>());
    } else if (f.has_default && f.type != FieldType::kObject &&
               f.type != FieldType::kBool) {
      EXPECT_EQ(std::stod(row->second[2]), TrialConfigDefault(f).get<double>());
    }
    rows.erase(row);
  }
  for (const auto& [path, ignored] : rows) {
    ADD_FAILURE() << "docs/running.md lists " << path
                  << ", which is no trial config field";
  }
}

}  // namespace
}  // namespace megabatch
