// A study of the user's own model end to end (docs/models.md): python3-torch
// exports a TorchScript module and .npy and token files as a user would;
// `megabatch submit` uploads the module, records the data files and runs
// the sweep on real workers; the module is stored once by its hash; files
// that do not fit are refused at submit, a label out of range fails its
// trial without retries, and a data file changed after submit is caught.
#include <grpcpp/grpcpp.h>

#include <cstring>

#include "common/channel.h"
#include "common/sha256.h"
#include "megabatch/v1/megabatch.grpc.pb.h"
#include "tests/e2e/e2e_fixture.h"

namespace megabatch {
namespace {

using nlohmann::json;

constexpr const char* kExport = R"py(
import os, sys
import numpy as np
import torch
import torch.nn as nn

models, data = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
torch.jit.save(torch.jit.script(net), os.path.join(models, 'tiny.pt'))
x = torch.randn(256, 6)
y = (x @ torch.randn(6, 3)).argmax(1)
np.save(os.path.join(data, 'train_x.npy'), x[:192].numpy())
np.save(os.path.join(data, 'train_y.npy'), y[:192].numpy())
np.save(os.path.join(data, 'val_x.npy'), x[192:].numpy())
np.save(os.path.join(data, 'val_y.npy'), y[192:].numpy())
np.save(os.path.join(data, 'short_y.npy'), y[:191].numpy())
np.save(os.path.join(data, 'big_y.npy'), torch.where(y == 2, 7, y)[:192].numpy())

class Lm(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(32, 16)
        self.head = nn.Linear(16, 32)
    def forward(self, tokens):
        return self.head(torch.tanh(self.embed(tokens)))
torch.jit.save(torch.jit.script(Lm()), os.path.join(models, 'lm.pt'))
np.tile(np.arange(32, dtype=np.uint16), 100).tofile(os.path.join(data, 'tokens.bin'))
)py";

class OwnModelE2ETest : public SweepE2ETest {
 protected:
  int WorkerCount() const override { return 1; }
  std::vector<std::string> WorkerFlags() const override {
    std::vector<std::string> flags = DataRootFlags();
    flags.insert(flags.end(), {"--model-cache", dir_.File("model-cache")});
    return flags;
  }

  void SetUp() override {
    SweepE2ETest::SetUp();
    std::filesystem::create_directories(dir_.File("models"));
    std::filesystem::create_directories(DataDir());
    const std::string script = dir_.File("export.py");
    std::ofstream(script) << kExport;
    ASSERT_EQ(std::system(("/usr/bin/python3 " + script + " " +
                           dir_.File("models") + " " + DataDir())
                              .c_str()),
              0);
  }

  // A classification spec in the test's directory, with paths relative to
  // it, as a user writes one.
  std::string ClassifierSpec(const std::string& name,
                             const std::string& train_y = "train_y.npy") {
    return WriteSpec(name + ".yaml", R"yaml(
name: )yaml" + name + R"yaml(
model: {type: torchscript, path: models/tiny.pt}
dataset:
  kind: classification
  train: {x: data/train_x.npy, y: data/)yaml" +
                                         train_y + R"yaml(}
  val: {x: data/val_x.npy, y: data/val_y.npy}
optimizers: [{name: lamb, lr: 0.01}, {name: adamw, lr: 0.01}]
batch_sizes: [16, 64]
base: {lr: 0.01}
budget: {steps: 10}
eval_every_steps: 5
max_retries: 2
)yaml");
  }

  // The files in the coordinator's model store.
  std::vector<std::string> StoredModels() {
    std::vector<std::string> names;
    for (const auto& e :
         std::filesystem::directory_iterator(db_path_ + "-models")) {
      names.push_back(e.path().filename().string());
    }
    return names;
  }

  std::string TrialErrors(int64_t sweep) {
    auto db = store::Db::Open(db_path_);
    EXPECT_TRUE(db.ok());
    auto q = (*db)->Prepare(
        "SELECT group_concat(error, ' | ') FROM trials WHERE sweep_id = " +
        std::to_string(sweep));
    EXPECT_TRUE(q.ok());
    EXPECT_TRUE(q->Step().ok());
    return q->Text(0);
  }
};

TEST_F(OwnModelE2ETest, ATorchScriptStudyRunsFromTheUsersFiles) {
  auto submit = Cli({"submit", ClassifierSpec("own"), "--wait"});
  ASSERT_EQ(submit.exit_code, 0)
      << submit.err << coordinator_->Log() << workers_[0]->Log();
  EXPECT_NE(submit.err.find("uploaded model "), std::string::npos)
      << submit.err;
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'completed'"), 4);
  ExpectEveryStepOnce("trial_id = 1", 10);
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics WHERE name = 'val_accuracy'"),
            4 * 2);
  // Stored once, under its hash; the stored spec names it by that hash and
  // records every data file.
  auto digest = Sha256File(dir_.File("models/tiny.pt"));
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(StoredModels(), std::vector<std::string>{digest->sha256 + ".pt"});
  auto db = store::Db::Open(db_path_);
  ASSERT_TRUE(db.ok());
  auto q = (*db)->Prepare("SELECT spec_json FROM sweeps WHERE id = 1");
  ASSERT_TRUE(q.ok());
  ASSERT_TRUE(*q->Step());
  const json spec = json::parse(q->Text(0));
  EXPECT_EQ(spec["model"]["sha256"], digest->sha256);
  EXPECT_EQ(spec["model"]["path"], dir_.File("models/tiny.pt"));
  EXPECT_EQ(spec["dataset"]["files"].size(), 4u);
  EXPECT_EQ(spec["dataset"]["files"][DataDir() + "/train_x.npy"]["shape"],
            json({192, 6}));
  // The worker fetched it once into its cache.
  EXPECT_TRUE(std::filesystem::exists(
      dir_.File("model-cache/" + digest->sha256 + ".pt")));

  // The same module again: not stored twice.
  auto again = Cli({"submit", ClassifierSpec("again"), "--wait"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.err.find("model already stored"), std::string::npos);
  EXPECT_EQ(StoredModels().size(), 1u);

  // A language model on a token file.
  auto lm = Cli({"submit", WriteSpec("lm.yaml", R"yaml(
name: own-lm
model: {type: torchscript, path: models/lm.pt}
dataset:
  kind: language_model
  train: {tokens: data/tokens.bin}
  val_fraction: 0.1
  seq_len: 8
optimizers: [{name: lamb, lr: 0.02}]
batch_sizes: [32]
base: {lr: 0.02}
budget: {steps: 12}
eval_every_steps: 6
target: {metric: val_perplexity, value: 1000}
)yaml"),
                 "--wait"});
  ASSERT_EQ(lm.exit_code, 0) << lm.err << workers_[0]->Log();
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics m JOIN trials t ON t.id = "
                   "m.trial_id WHERE t.sweep_id = 3 AND m.name = "
                   "'val_bits_per_token'"),
            3);  // steps 0 (the target's start), 6 and 12
  EXPECT_EQ(StoredModels().size(), 2u);
}

// What the planner and successive halving read (the training split's size,
// validation metrics) comes from the files' record as for a built-in model.
TEST_F(OwnModelE2ETest, AdaptiveStudiesAndSuccessiveHalvingRunOnAnOwnModel) {
  const std::string data = R"yaml(
model: {type: torchscript, path: models/tiny.pt}
dataset:
  kind: classification
  train: {x: data/train_x.npy, y: data/train_y.npy}
  val: {x: data/val_x.npy, y: data/val_y.npy}
optimizers: [{name: lamb}]
budget: {epochs: 6}
eval_every_samples: 96
)yaml";
  auto adaptive =
      Cli({"submit",
           WriteSpec("adaptive.yaml", "name: own-adaptive" + data + R"yaml(
base: {batch_size: 8, lr: 0.01}
strategy: {type: adaptive, max_batch_size: 64, batch_sizes: 3, lr_trials_per_batch: 3,
           search_fraction: 0.25, finish_lrs: 1}
target: {metric: val_accuracy, value: 0.7, stop: true}
)yaml"),
           "--wait"});
  ASSERT_EQ(adaptive.exit_code, 0) << adaptive.err << workers_[0]->Log();
  EXPECT_GT(Scalar("SELECT count(*) FROM trials WHERE sweep_id = 1 AND phase = "
                   "'search'"),
            0);
  EXPECT_GT(Scalar("SELECT count(*) FROM trials WHERE sweep_id = 1 AND phase = "
                   "'finish' AND state = 'completed'"),
            0);
  EXPECT_LE(Scalar("SELECT max(batch_size) FROM trials WHERE sweep_id = 1"),
            64);

  auto asha =
      Cli({"submit", WriteSpec("asha.yaml", "name: own-asha" + data + R"yaml(
batch_sizes: [16]
base: {lr: 0.01}
lr_multipliers: [0.001, 1, 4]
early_stopping: {rule: asha, metric: val_accuracy, min_samples: 192, reduction_factor: 3}
)yaml"),
           "--wait"});
  ASSERT_EQ(asha.exit_code, 0) << asha.err;
  EXPECT_GT(Scalar("SELECT count(*) FROM rungs r JOIN trials t ON t.id = "
                   "r.trial_id WHERE t.sweep_id = 2"),
            0);
}

TEST_F(OwnModelE2ETest, FilesThatDoNotFitAreRefusedAtSubmitOrFailWithoutRetry) {
  // Caught by the client from the files themselves: nothing is submitted.
  auto short_y = Cli({"submit", ClassifierSpec("short", "short_y.npy")});
  EXPECT_EQ(short_y.exit_code, 1);
  EXPECT_NE(short_y.err.find("dataset.train.y: " + DataDir() +
                             "/short_y.npy: 191 labels for the 192 samples "
                             "of dataset.train.x"),
            std::string::npos)
      << short_y.err;
  EXPECT_EQ(Scalar("SELECT count(*) FROM sweeps"), 0);

  // Found by the trainer before training (the module has 3 logits): the
  // trial fails at once, its retries unused.
  auto big = Cli({"submit", ClassifierSpec("big", "big_y.npy"), "--wait"});
  EXPECT_EQ(big.exit_code, 1);
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'failed'"), 4);
  EXPECT_EQ(Scalar("SELECT max(attempts) FROM trials"), 1);
  EXPECT_NE(TrialErrors(1).find("dataset.train.y: label 7 is out of range "
                                "for the model's 3 logits"),
            std::string::npos)
      << TrialErrors(1);
}

TEST_F(OwnModelE2ETest, ADataFileChangedAfterSubmitFailsItsTrialNamingBoth) {
  // Upload the module and build the spec the client would, then change a
  // data file before a worker reads it: submitted here by hand so that the
  // change cannot race the worker.
  auto channel = MakeChannel(address_, ChannelOptions{});
  ASSERT_TRUE(channel.ok());
  auto stub = v1::SweepService::NewStub(*channel);
  std::string module;
  {
    std::ifstream in(dir_.File("models/tiny.pt"), std::ios::binary);
    module.assign(std::istreambuf_iterator<char>(in), {});
  }
  grpc::ClientContext upload_ctx;
  v1::UploadModelResponse uploaded;
  auto writer = stub->UploadModel(&upload_ctx, &uploaded);
  v1::UploadModelRequest chunk;
  chunk.set_data(module);
  ASSERT_TRUE(writer->Write(chunk));
  writer->WritesDone();
  ASSERT_TRUE(writer->Finish().ok());
  EXPECT_EQ(uploaded.sha256(), Sha256Hex(module));

  json files = json::object();
  for (const char* f :
       {"train_x.npy", "train_y.npy", "val_x.npy", "val_y.npy"}) {
    const std::string path = DataDir() + "/" + f;
    auto d = Sha256File(path);
    ASSERT_TRUE(d.ok());
    const bool x = f[std::strlen(f) - 5] == 'x';
    const int64_t rows = f[0] == 't' ? 192 : 64;
    files[path] = {{"bytes", d->bytes},
                   {"sha256", d->sha256},
                   {"dtype", x ? "float32" : "int64"},
                   {"shape", x ? json{rows, 6} : json{rows}}};
  }
  const std::string before = files[DataDir() + "/train_x.npy"]["sha256"];
  json spec = {
      {"name", "changed"},
      {"model",
       {{"type", "torchscript"},
        {"path", "tiny.pt"},
        {"sha256", uploaded.sha256()},
        {"bytes", uploaded.bytes()}}},
      {"dataset",
       {{"kind", "classification"},
        {"train",
         {{"x", DataDir() + "/train_x.npy"},
          {"y", DataDir() + "/train_y.npy"}}},
        {"val",
         {{"x", DataDir() + "/val_x.npy"}, {"y", DataDir() + "/val_y.npy"}}},
        {"files", files}}},
      {"optimizers", {{{"name", "lamb"}, {"lr", 0.01}}}},
      {"batch_sizes", {16}},
      {"base", {{"lr", 0.01}}},
      {"budget", {{"steps", 4}}},
      {"max_retries", 2}};
  // Same size, other bytes.
  {
    std::fstream x(DataDir() + "/train_x.npy",
                   std::ios::in | std::ios::out | std::ios::binary);
    x.seekp(-4, std::ios::end);
    x.write("\x00\x00\x80\x3f", 4);  // the last value becomes 1.0f
  }
  auto after = Sha256File(DataDir() + "/train_x.npy");
  ASSERT_TRUE(after.ok());
  ASSERT_NE(after->sha256, before);

  // A module the coordinator never received is refused at submit.
  json unknown = spec;
  unknown["model"]["sha256"] = std::string(64, 'a');
  grpc::ClientContext refused_ctx;
  v1::SubmitSweepRequest refused_req;
  refused_req.set_spec(unknown.dump());
  v1::SubmitSweepResponse refused_resp;
  grpc::Status refused =
      stub->SubmitSweep(&refused_ctx, refused_req, &refused_resp);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(refused.error_message().find("model.sha256: no module aaaa"),
            std::string::npos)
      << refused.error_message();

  // Nor may a spec understate the module's size (the parameter cap reads it).
  json small = spec;
  small["model"]["bytes"] = 1;
  grpc::ClientContext small_ctx;
  v1::SubmitSweepRequest small_req;
  small_req.set_spec(small.dump());
  grpc::Status understated =
      stub->SubmitSweep(&small_ctx, small_req, &refused_resp);
  EXPECT_EQ(understated.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(understated.error_message().find("model.bytes: 1, but module"),
            std::string::npos)
      << understated.error_message();

  grpc::ClientContext ctx;
  v1::SubmitSweepRequest req;
  req.set_spec(spec.dump());
  v1::SubmitSweepResponse resp;
  ASSERT_TRUE(stub->SubmitSweep(&ctx, req, &resp).ok());
  auto watch = Cli({"watch", std::to_string(resp.sweep_id())});
  EXPECT_EQ(watch.exit_code, 1) << watch.err;
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'failed' AND "
                   "attempts = 1"),
            1);
  const std::string error = TrialErrors(resp.sweep_id());
  EXPECT_NE(error.find("dataset.train.x: " + DataDir() +
                       "/train_x.npy changed since the sweep was submitted"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find(after->sha256), std::string::npos) << error;
  EXPECT_NE(error.find(before), std::string::npos) << error;
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics"), 0);
}

}  // namespace
}  // namespace megabatch
