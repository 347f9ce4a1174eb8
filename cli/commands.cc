#include "cli/commands.h"

#include <fstream>
#include <random>
#include <sstream>

#include "common/status.h"

namespace megabatch::cli {
namespace {

using nlohmann::json;

std::string StateName(v1::SweepState s) {
  std::string name = v1::SweepState_Name(s).substr(sizeof("SWEEP_STATE_") - 1);
  for (char& c : name) c = static_cast<char>(std::tolower(c));
  return name;
}

std::string StateName(v1::TrialState s) {
  std::string name = v1::TrialState_Name(s).substr(sizeof("TRIAL_STATE_") - 1);
  for (char& c : name) c = static_cast<char>(std::tolower(c));
  return name;
}

json Metric(const v1::Trial& t, const std::string& name) {
  auto it = t.latest_metrics().find(name);
  if (it == t.latest_metrics().end()) return nullptr;
  return it->second;
}

std::string Progress(const v1::Sweep& s) {
  int done = s.trials_completed() + s.trials_failed() + s.trials_cancelled() +
             s.trials_diverged();
  std::ostringstream m;
  m << "sweep " << s.id() << " '" << s.name() << "' " << StateName(s.state())
    << ": " << done << "/" << s.trials_total() << " done (running "
    << s.trials_running() << ", queued " << s.trials_queued() << ", completed "
    << s.trials_completed() << ", diverged " << s.trials_diverged()
    << ", failed " << s.trials_failed() << ", cancelled "
    << s.trials_cancelled() << ")";
  return m.str();
}

std::string NewRequestId() {
  std::random_device rd;
  std::ostringstream id;
  id << std::hex << rd() << rd() << rd() << rd();
  return id.str();
}

}  // namespace

int Commands::Fail(const grpc::Status& s) {
  err_ << "megabatch: "
       << StatusCodeName(static_cast<StatusCode>(s.error_code())) << ": "
       << s.error_message() << "\n";
  return kExitFailed;
}

int Commands::Submit(const std::string& spec_path,
                     const std::string& request_id, bool wait) {
  std::ifstream in(spec_path, std::ios::binary);
  if (!in) {
    err_ << "megabatch: INVALID_ARGUMENT: spec file " << spec_path
         << ": cannot read (no such file?)\n";
    return kExitUsage;
  }
  std::stringstream text;
  text << in.rdbuf();
  v1::SubmitSweepRequest req;
  req.set_spec(text.str());
  auto ends_with = [&](const char* ext) {
    std::string e(ext);
    return spec_path.size() >= e.size() &&
           spec_path.compare(spec_path.size() - e.size(), e.size(), e) == 0;
  };
  if (ends_with(".json")) req.set_format("json");
  if (ends_with(".yaml") || ends_with(".yml")) req.set_format("yaml");
  // A generated id makes a retried submit (after a lost reply) idempotent.
  req.set_request_id(request_id.empty() ? NewRequestId() : request_id);
  // The request id makes waiting for a (re)starting coordinator safe.
  grpc::ClientContext ctx;
  ctx.set_wait_for_ready(true);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::SubmitSweepResponse resp;
  grpc::Status s = stub_->SubmitSweep(&ctx, req, &resp);
  if (!s.ok()) return Fail(s);
  err_ << "submitted sweep " << resp.sweep_id() << " with " << resp.trials()
       << " trials\n";
  if (format_ == OutputFormat::kJson) {
    out_ << json{{"sweep_id", resp.sweep_id()}, {"trials", resp.trials()}}.dump()
         << "\n";
  } else if (format_ == OutputFormat::kCsv) {
    Table t({"sweep_id", "trials"});
    t.AddRow({resp.sweep_id(), resp.trials()});
    t.Print(out_, format_);
  } else {
    out_ << resp.sweep_id() << "\n";
  }
  if (!wait) return kExitOk;
  return Watch(resp.sweep_id());
}

void Commands::PrintSweeps(
    const google::protobuf::RepeatedPtrField<v1::Sweep>& sweeps) {
  Table t({"id", "name", "state", "trials", "queued", "running", "completed",
           "diverged", "failed", "cancelled", "priority"});
  for (const auto& s : sweeps) {
    t.AddRow({s.id(), s.name(), StateName(s.state()), s.trials_total(),
              s.trials_queued(), s.trials_running(), s.trials_completed(),
              s.trials_diverged(), s.trials_failed(), s.trials_cancelled(),
              s.priority()});
  }
  t.Print(out_, format_);
}

int Commands::List() {
  grpc::ClientContext ctx;
  v1::ListSweepsResponse resp;
  grpc::Status s = stub_->ListSweeps(&ctx, v1::ListSweepsRequest(), &resp);
  if (!s.ok()) return Fail(s);
  PrintSweeps(resp.sweeps());
  return kExitOk;
}

int Commands::Status(int64_t sweep_id) {
  grpc::ClientContext ctx;
  v1::GetSweepRequest req;
  req.set_sweep_id(sweep_id);
  google::protobuf::RepeatedPtrField<v1::Sweep> one;
  grpc::Status s = stub_->GetSweep(&ctx, req, one.Add());
  if (!s.ok()) return Fail(s);
  PrintSweeps(one);
  return kExitOk;
}

int Commands::Trials(int64_t sweep_id) {
  grpc::ClientContext ctx;
  v1::ListTrialsRequest req;
  req.set_sweep_id(sweep_id);
  v1::ListTrialsResponse resp;
  grpc::Status s = stub_->ListTrials(&ctx, req, &resp);
  if (!s.ok()) return Fail(s);
  Table t({"trial", "optimizer", "batch_size", "lr", "lr_multiplier", "seed",
           "state", "attempts", "epoch", "train_loss", "test_accuracy",
           "error"});
  for (const auto& tr : resp.trials()) {
    t.AddRow({tr.id(), tr.optimizer(), tr.batch_size(), tr.lr(),
              tr.lr_multiplier(), tr.seed(), StateName(tr.state()),
              tr.attempts(), Metric(tr, "epoch"), Metric(tr, "train_loss"),
              Metric(tr, "test_accuracy"), tr.error()});
  }
  t.Print(out_, format_);
  return kExitOk;
}

int Commands::Workers() {
  grpc::ClientContext ctx;
  v1::ListWorkersResponse resp;
  grpc::Status s = stub_->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp);
  if (!s.ok()) return Fail(s);
  Table t({"id", "name", "state", "slots", "busy", "last_heartbeat_age_s"});
  double now = std::chrono::duration<double>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
  for (const auto& w : resp.workers()) {
    t.AddRow({w.id(), w.name(), w.state(), w.slots(), w.busy_slots(),
              std::max(0.0, now - w.last_heartbeat_at())});
  }
  t.Print(out_, format_);
  return kExitOk;
}

int Commands::Watch(int64_t sweep_id) {
  grpc::ClientContext ctx;
  v1::WatchSweepRequest req;
  req.set_sweep_id(sweep_id);
  auto reader = stub_->WatchSweep(&ctx, req);
  v1::WatchSweepResponse update;
  std::string last;
  bool got_any = false;
  while (reader->Read(&update)) {
    got_any = true;
    std::string line = Progress(update.sweep());
    if (line != last) err_ << line << "\n";
    last = line;
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return Fail(s);
  if (!got_any) {
    err_ << "megabatch: sweep " << sweep_id << ": watch ended without news\n";
    return kExitFailed;
  }
  google::protobuf::RepeatedPtrField<v1::Sweep> one;
  *one.Add() = update.sweep();
  PrintSweeps(one);
  v1::SweepState final_state = update.sweep().state();
  return final_state == v1::SWEEP_STATE_COMPLETED ? kExitOk : kExitFailed;
}

int Commands::Cancel(int64_t sweep_id) {
  grpc::ClientContext ctx;
  v1::CancelSweepRequest req;
  req.set_sweep_id(sweep_id);
  google::protobuf::RepeatedPtrField<v1::Sweep> one;
  grpc::Status s = stub_->CancelSweep(&ctx, req, one.Add());
  if (!s.ok()) return Fail(s);
  PrintSweeps(one);
  return kExitOk;
}

}  // namespace megabatch::cli
