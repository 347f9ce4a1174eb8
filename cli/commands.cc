#include "cli/commands.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "cli/own_model.h"
#include "cli/plot.h"
#include "common/metric_catalog.h"
#include "common/printable.h"
#include "common/report_columns.h"
#include "common/selection_metrics.h"
#include "common/status.h"
#include "server/spec/sweep_spec.h"

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

// Calls a paged listing (AIP-158) until its last page, passing each page's
// response to `each`: the CLI never asks for more than one page at a time.
template <typename Request, typename Response, typename Call, typename Each>
grpc::Status ForEachPage(Request req, Call call, Each each) {
  while (true) {
    grpc::ClientContext ctx;
    Response resp;
    grpc::Status s = call(&ctx, req, &resp);
    if (!s.ok()) return s;
    each(resp);
    if (resp.next_page_token().empty()) return s;
    req.set_page_token(resp.next_page_token());
  }
}

// A time figure (seconds_to_target, samples_per_second) measured while the
// host's trainers outnumbered its cores: marked "(shared)" in the tables
// people read; JSON and CSV keep the number (and say shared elsewhere).
json TimeFigure(json value, bool shared, OutputFormat format) {
  const bool readable =
      format == OutputFormat::kTable || format == OutputFormat::kMarkdown;
  if (!shared || !readable || !value.is_number()) return value;
  return FormatNumber(value.get<double>()) + " (shared)";
}

json Metric(const v1::Trial& t, const std::string& name) {
  auto it = t.latest_metrics().find(name);
  if (it == t.latest_metrics().end()) return nullptr;
  return it->second;
}

std::string Progress(const v1::Sweep& s) {
  int done = s.trials_completed() + s.trials_failed() + s.trials_cancelled() +
             s.trials_diverged() + s.trials_pruned();
  std::ostringstream m;
  m << "sweep " << s.id() << " '" << Printable(s.name()) << "' "
    << StateName(s.state()) << ": " << done << "/" << s.trials_total()
    << " done (running " << s.trials_running() << ", queued "
    << s.trials_queued() << ", completed " << s.trials_completed()
    << ", diverged " << s.trials_diverged() << ", pruned " << s.trials_pruned()
    << ", failed " << s.trials_failed() << ", cancelled "
    << s.trials_cancelled() << ")";
  if (!s.phase().empty()) m << ", adaptive phase " << s.phase();
  return m.str();
}

json ToJson(const v1::Value& v) {
  switch (v.kind_case()) {
    case v1::Value::kInteger:
      return v.integer();
    case v1::Value::kReal:
      return v.real();
    case v1::Value::kText:
      return v.text();
    case v1::Value::kBlob: {
      static const char* kHex = "0123456789ABCDEF";
      std::string hex = "X'";
      for (unsigned char c : v.blob()) {
        hex += kHex[c >> 4];
        hex += kHex[c & 15];
      }
      return hex + "'";
    }
    case v1::Value::KIND_NOT_SET:
      break;
  }
  return nullptr;
}

json Maybe(bool has, double value) { return has ? json(value) : json(nullptr); }

// The field `name` of `message` as JSON; null when an optional field is
// unset or there is no such field.
json FieldValue(const google::protobuf::Message& message,
                std::string_view name) {
  const auto* field =
      message.GetDescriptor()->FindFieldByName(std::string(name));
  const auto* reflection = message.GetReflection();
  if (field == nullptr ||
      (field->has_presence() && !reflection->HasField(message, field))) {
    return nullptr;
  }
  switch (field->cpp_type()) {
    case google::protobuf::FieldDescriptor::CPPTYPE_STRING:
      return reflection->GetString(message, field);
    case google::protobuf::FieldDescriptor::CPPTYPE_INT64:
      return reflection->GetInt64(message, field);
    case google::protobuf::FieldDescriptor::CPPTYPE_INT32:
      return reflection->GetInt32(message, field);
    case google::protobuf::FieldDescriptor::CPPTYPE_DOUBLE:
      return reflection->GetDouble(message, field);
    default:
      return nullptr;
  }
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
       << Printable(s.error_message()) << "\n";
  return kExitFailed;
}

Result<UploadedModel> Commands::UploadModel(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return NotFoundError("model.path: " + path + ": cannot read");
  }
  grpc::ClientContext ctx;
  ctx.set_wait_for_ready(true);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  v1::UploadModelResponse resp;
  auto writer = stub_->UploadModel(&ctx, &resp);
  std::string buffer(size_t{1} << 20, '\0');
  v1::UploadModelRequest chunk;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    if (in.gcount() == 0) break;
    chunk.set_data(buffer.data(), static_cast<size_t>(in.gcount()));
    if (!writer->Write(chunk)) break;  // Finish() says why
  }
  // A file that cannot be read to its end is not stored in part.
  if (in.bad()) ctx.TryCancel();
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) {
    return megabatch::Status(
        static_cast<StatusCode>(s.error_code()),
        "uploading model.path " + path + ": " + s.error_message());
  }
  if (in.bad()) return InternalError("model.path: " + path + ": read error");
  err_ << (resp.existed() ? "model already stored: " : "uploaded model ")
       << resp.sha256().substr(0, 12) << " (" << resp.bytes() << " bytes)\n";
  return UploadedModel{resp.sha256(), resp.bytes()};
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
  // A torchscript sweep: its files are on this machine (own_model.h).
  if (Result<json> doc = spec::SpecTextToJson(
          req.spec(), req.format() == "json"   ? spec::SpecFormat::kJson
                      : req.format() == "yaml" ? spec::SpecFormat::kYaml
                                               : spec::SpecFormat::kAuto);
      doc.ok() && IsOwnModelSpec(*doc)) {
    Result<json> prepared = PrepareOwnModelSpec(
        *std::move(doc), std::filesystem::absolute(spec_path).parent_path(),
        [&](const std::string& path) { return UploadModel(path); });
    if (!prepared.ok()) {
      err_ << "megabatch: " << StatusCodeName(prepared.status().code()) << ": "
           << Printable(prepared.status().message()) << "\n";
      return kExitFailed;
    }
    req.set_spec(prepared->dump());
    req.set_format("json");
  }
  // A generated id makes a retried submit (after a lost reply) idempotent.
  req.set_request_id(request_id.empty() ? NewRequestId() : request_id);
  // The request id makes waiting for a (re)starting coordinator safe.
  grpc::ClientContext ctx;
  ctx.set_wait_for_ready(true);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::SubmitSweepResponse resp;
  grpc::Status s = stub_->SubmitSweep(&ctx, req, &resp);
  if (!s.ok()) return Fail(s);
  err_ << (resp.repeated() ? "request id already used for this spec: sweep "
                           : "submitted sweep ")
       << resp.sweep_id() << " with " << resp.trials() << " trials\n";
  if (format_ == OutputFormat::kJson) {
    out_
        << json{{"sweep_id", resp.sweep_id()}, {"trials", resp.trials()}}.dump()
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
           "diverged", "failed", "cancelled", "priority", "pruned"});
  for (const auto& s : sweeps) {
    t.AddRow({s.id(), s.name(), StateName(s.state()), s.trials_total(),
              s.trials_queued(), s.trials_running(), s.trials_completed(),
              s.trials_diverged(), s.trials_failed(), s.trials_cancelled(),
              s.priority(), s.trials_pruned()});
  }
  t.Print(out_, format_);
}

int Commands::List() {
  google::protobuf::RepeatedPtrField<v1::Sweep> sweeps;
  grpc::Status s = ForEachPage<v1::ListSweepsRequest, v1::ListSweepsResponse>(
      {},
      [&](auto* ctx, const auto& req, auto* resp) {
        return stub_->ListSweeps(ctx, req, resp);
      },
      [&](const v1::ListSweepsResponse& page) {
        sweeps.MergeFrom(page.sweeps());
      });
  if (!s.ok()) return Fail(s);
  PrintSweeps(sweeps);
  return kExitOk;
}

grpc::Status Commands::AllTrials(
    int64_t sweep_id, google::protobuf::RepeatedPtrField<v1::Trial>* trials) {
  v1::ListTrialsRequest req;
  req.set_sweep_id(sweep_id);
  return ForEachPage<v1::ListTrialsRequest, v1::ListTrialsResponse>(
      req,
      [&](auto* ctx, const auto& r, auto* resp) {
        return stub_->ListTrials(ctx, r, resp);
      },
      [&](const v1::ListTrialsResponse& page) {
        trials->MergeFrom(page.trials());
      });
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
  google::protobuf::RepeatedPtrField<v1::Trial> trials;
  grpc::Status s = AllTrials(sweep_id, &trials);
  if (!s.ok()) return Fail(s);
  // An adaptive study's trials say which phase of its plan made them.
  bool phased = false;
  for (const auto& tr : trials) phased = phased || !tr.phase().empty();
  std::vector<std::string> columns = {"trial",
                                      "optimizer",
                                      "batch_size",
                                      "lr",
                                      "lr_multiplier",
                                      "seed",
                                      "state",
                                      "attempts",
                                      metric::kEpoch,
                                      metric::kTrainLoss,
                                      metric::kValAccuracy,
                                      metric::kThreads,
                                      metric::kSamplesPerSecond,
                                      "error"};
  if (phased) columns.insert(columns.begin() + 1, "phase");
  Table t(columns);
  for (const auto& tr : trials) {
    auto shared = tr.latest_metrics().find(metric::kSharedCores);
    json rate = TimeFigure(
        Metric(tr, metric::kSamplesPerSecond),
        shared != tr.latest_metrics().end() && shared->second > 0, format_);
    std::vector<json> row = {tr.id(),
                             tr.optimizer(),
                             tr.batch_size(),
                             tr.lr(),
                             tr.lr_multiplier(),
                             tr.seed(),
                             StateName(tr.state()),
                             tr.attempts(),
                             Metric(tr, metric::kEpoch),
                             Metric(tr, metric::kTrainLoss),
                             Metric(tr, metric::kValAccuracy),
                             Metric(tr, metric::kThreads),
                             rate,
                             tr.error()};
    if (phased) row.insert(row.begin() + 1, tr.phase());
    t.AddRow(std::move(row));
  }
  t.Print(out_, format_);
  return kExitOk;
}

int Commands::Workers() {
  v1::ListWorkersResponse resp;
  grpc::Status s = ForEachPage<v1::ListWorkersRequest, v1::ListWorkersResponse>(
      {},
      [&](auto* ctx, const auto& req, auto* page) {
        return stub_->ListWorkers(ctx, req, page);
      },
      [&](const v1::ListWorkersResponse& page) {
        resp.mutable_workers()->MergeFrom(page.workers());
      });
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
  // Rides out a coordinator restart: once the watch has heard from the
  // coordinator, while it is unreachable (UNAVAILABLE, or CANCELLED by its
  // shutdown) the watch reconnects with backoff, for up to kWatchGiveUp,
  // saying so on stderr. A coordinator never reached fails at once.
  constexpr auto kWatchGiveUp = std::chrono::minutes(10);
  constexpr auto kMaxBackoff = std::chrono::seconds(5);
  v1::WatchSweepRequest req;
  req.set_sweep_id(sweep_id);
  v1::WatchSweepResponse update;
  std::string last;
  bool got_any = false;
  auto backoff = std::chrono::milliseconds(250);
  std::optional<std::chrono::steady_clock::time_point> down_since;
  while (true) {
    grpc::ClientContext ctx;
    auto reader = stub_->WatchSweep(&ctx, req);
    bool final_seen = false;
    while (reader->Read(&update)) {
      got_any = true;
      if (down_since) {
        err_ << "megabatch: reconnected to the coordinator; watching sweep "
             << sweep_id << " again\n";
        down_since.reset();
        backoff = std::chrono::milliseconds(250);
      }
      std::string line = Progress(update.sweep());
      if (line != last) err_ << line << "\n";
      last = line;
      final_seen = update.sweep().state() == v1::SWEEP_STATE_COMPLETED ||
                   update.sweep().state() == v1::SWEEP_STATE_FAILED ||
                   update.sweep().state() == v1::SWEEP_STATE_CANCELLED;
    }
    grpc::Status s = reader->Finish();
    if (s.ok() || final_seen) break;
    const bool transient = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                           s.error_code() == grpc::StatusCode::CANCELLED;
    const auto now = std::chrono::steady_clock::now();
    if (!transient || !got_any ||
        (down_since && now - *down_since > kWatchGiveUp)) {
      return Fail(s);
    }
    if (!down_since) {
      down_since = now;
      err_ << "megabatch: coordinator unreachable ("
           << Printable(s.error_message())
           << "); reconnecting with backoff for up to "
           << std::chrono::duration_cast<std::chrono::minutes>(kWatchGiveUp)
                  .count()
           << " minutes\n";
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, kMaxBackoff);
  }
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

int Commands::Query(const std::string& sql, int64_t max_rows,
                    int32_t timeout_ms) {
  grpc::ClientContext ctx;
  v1::QueryRequest req;
  req.set_sql(sql);
  req.set_max_rows(max_rows);
  req.set_timeout_ms(timeout_ms);
  v1::QueryResponse resp;
  grpc::Status s = stub_->Query(&ctx, req, &resp);
  if (!s.ok()) return Fail(s);
  Table t({resp.columns().begin(), resp.columns().end()});
  for (const auto& row : resp.rows()) {
    std::vector<json> values;
    for (const auto& v : row.values()) values.push_back(ToJson(v));
    t.AddRow(std::move(values));
  }
  t.Print(out_, format_);
  if (!resp.truncated().empty()) {
    err_ << "megabatch: result truncated at " << resp.rows_size() << " rows ("
         << resp.truncated() << "); raise --max-rows, narrow the query, or use "
         << "export\n";
  }
  return kExitOk;
}

int Commands::Report(int64_t sweep_id, const std::string& plot_path) {
  grpc::ClientContext ctx;
  v1::GetSweepReportRequest req;
  req.set_sweep_id(sweep_id);
  v1::SweepReport report;
  grpc::Status s = stub_->GetSweepReport(&ctx, req, &report);
  if (!s.ok()) return Fail(s);

  std::map<std::string, const v1::CriticalBatchFit*> fit_of;
  for (const auto& f : report.fits()) fit_of[f.optimizer()] = &f;
  const bool csv = format_ == OutputFormat::kCsv;
  std::vector<std::string> columns;
  for (const ReportColumn& c : kReportColumns) {
    if (c.cli) columns.emplace_back(c.name);
  }
  // CSV is one table, so each row carries its optimizer's fit.
  if (csv) {
    columns.insert(columns.end(), {"s_min", "b_crit", "b_crit_low",
                                   "b_crit_high", "noise_scale"});
  }
  Table rows(columns);
  bool marked = false;  // a row's time figures are marked: explain the mark
  for (const auto& r : report.rows()) {
    std::vector<json> row;
    for (const ReportColumn& c : kReportColumns) {
      if (!c.cli) continue;
      json value = FieldValue(r, c.name);
      if (c.time_figure) {
        value = TimeFigure(value, r.shared_core_trials() > 0, format_);
        marked = marked || value.is_string();
      }
      row.push_back(std::move(value));
    }
    if (csv) {
      const v1::CriticalBatchFit* f = fit_of[r.optimizer()];
      row.push_back(f ? Maybe(f->has_s_min(), f->s_min()) : json(nullptr));
      row.push_back(f ? Maybe(f->has_b_crit(), f->b_crit()) : json(nullptr));
      row.push_back(f ? Maybe(f->has_b_crit_low(), f->b_crit_low())
                      : json(nullptr));
      row.push_back(f ? Maybe(f->has_b_crit_high(), f->b_crit_high())
                      : json(nullptr));
      row.push_back(f ? Maybe(f->has_noise_scale(), f->noise_scale())
                      : json(nullptr));
    }
    rows.AddRow(std::move(row));
  }
  Table fits({"optimizer", "points", "s_min", "s_min_low", "s_min_high",
              "b_crit", "b_crit_low", "b_crit_high", "r_squared", "interval",
              "b_20pct", "b_20pct_low", "b_20pct_high", "b_20pct_measured",
              "noise_scale", "b_crit_over_noise_scale", "noise_scale_source",
              "note"});
  for (const auto& f : report.fits()) {
    fits.AddRow(
        {f.optimizer(), f.points(), Maybe(f.has_s_min(), f.s_min()),
         Maybe(f.has_s_min_low(), f.s_min_low()),
         Maybe(f.has_s_min_high(), f.s_min_high()),
         Maybe(f.has_b_crit(), f.b_crit()),
         Maybe(f.has_b_crit_low(), f.b_crit_low()),
         Maybe(f.has_b_crit_high(), f.b_crit_high()),
         Maybe(f.has_r_squared(), f.r_squared()), f.interval_method(),
         Maybe(f.has_b_20pct(), f.b_20pct()),
         Maybe(f.has_b_20pct_low(), f.b_20pct_low()),
         Maybe(f.has_b_20pct_high(), f.b_20pct_high()),
         Maybe(f.has_b_20pct_measured(), f.b_20pct_measured()),
         Maybe(f.has_noise_scale(), f.noise_scale()),
         Maybe(f.has_b_crit_over_noise_scale(), f.b_crit_over_noise_scale()),
         f.noise_scale_source(), f.note()});
  }
  Table diverged({"optimizer", "batch_size", "lr", "diverged", "trials"});
  for (const auto& d : report.diverged()) {
    diverged.AddRow(
        {d.optimizer(), d.batch_size(), d.lr(), d.diverged(), d.trials()});
  }

  const v1::Sweep& sweep = report.sweep();
  std::string target =
      report.target_metric().empty()
          ? "no target (best lr by val_accuracy)"
          : "target " + report.target_metric() +
                (HigherIsBetter(report.target_metric()) ? " >= " : " <= ") +
                FormatNumber(report.target_value());
  if (format_ == OutputFormat::kJson) {
    json out = {{"sweep_id", sweep.id()},
                {"name", sweep.name()},
                {"state", StateName(sweep.state())},
                {"target_metric", report.target_metric().empty()
                                      ? json(nullptr)
                                      : json(report.target_metric())},
                {"target_value",
                 Maybe(report.has_target_value(), report.target_value())},
                {"rows", rows.ToJson()},
                {"critical_batch", fits.ToJson()},
                {"diverged", diverged.ToJson()}};
    if (!report.plan().empty()) {
      out["plan"] = json(
          std::vector<std::string>(report.plan().begin(), report.plan().end()));
      out["predicted_b_crit"] =
          Maybe(report.has_predicted_b_crit(), report.predicted_b_crit());
    }
    out_ << out.dump(2) << "\n";
  } else if (csv) {
    rows.Print(out_, format_);
  } else {
    const bool md = format_ == OutputFormat::kMarkdown;
    const char* h = md ? "## " : "";
    out_ << h << "Sweep " << sweep.id() << " '" << sweep.name() << "' ("
         << StateName(sweep.state()) << "): " << target << "\n\n";
    out_ << h << "Best lr per optimizer and batch size\n\n";
    rows.Print(out_, format_);
    if (marked) {
      out_ << "\n(shared): from trials that shared cores with other trainers "
              "at some time "
              "(shared_core_trials); these time figures measure the "
              "contention, not the "
              "training. Steps and samples are unaffected.\n";
    }
    out_ << "\n" << h << "Critical batch size: S(b) = S_min·(1 + B_crit/b)\n\n";
    fits.Print(out_, format_);
    out_ << "\n" << h << "Diverged\n\n";
    if (report.diverged().empty()) {
      out_ << "none\n";
    } else {
      diverged.Print(out_, format_);
    }
    if (!report.plan().empty()) {
      if (sweep.phase().empty()) {
        out_ << "\n" << h << "Plan (lrs added past the grid's edges)\n\n";
      } else {
        out_ << "\n"
             << h << "Adaptive plan (phase " << sweep.phase() << ")\n\n";
      }
      if (report.has_predicted_b_crit()) {
        out_ << "The probe predicted B_crit ~ B_simple = "
             << FormatNumber(report.predicted_b_crit());
        for (const auto& f : report.fits()) {
          if (f.has_b_crit()) {
            out_ << "; " << f.optimizer() << " fitted "
                 << FormatNumber(f.b_crit());
          }
        }
        out_ << ".\n\n";
      }
      for (const auto& decision : report.plan()) {
        out_ << (md ? "- " : "  ") << decision << "\n";
      }
    }
  }
  if (!plot_path.empty()) {
    std::ofstream plot(plot_path, std::ios::binary | std::ios::trunc);
    plot << ScalingPlotSvg(report);
    plot.close();
    if (!plot) {
      err_ << "megabatch: cannot write " << plot_path << "\n";
      return kExitFailed;
    }
    err_ << "wrote " << plot_path << "\n";
  }
  return kExitOk;
}

int Commands::Export(int64_t sweep_id, const std::vector<std::string>& names) {
  // Trial columns come from ListTrials (paged); the metrics stream.
  std::map<int64_t, v1::Trial> trials;
  {
    google::protobuf::RepeatedPtrField<v1::Trial> all;
    grpc::Status s = AllTrials(sweep_id, &all);
    if (!s.ok()) return Fail(s);
    for (const auto& t : all) trials[t.id()] = t;
  }
  grpc::ClientContext ctx;
  v1::ExportMetricsRequest req;
  req.set_sweep_id(sweep_id);
  for (const auto& n : names) req.add_names(n);
  auto reader = stub_->ExportMetrics(&ctx, req);
  const bool jsonl = format_ == OutputFormat::kJson;
  if (!jsonl) {
    out_ << "trial_id,optimizer,batch_size,lr,seed,name,step,value,recorded_"
            "at\n";
  }
  v1::ExportMetricsResponse chunk;
  int64_t rows = 0;
  while (reader->Read(&chunk)) {
    for (const auto& m : chunk.rows()) {
      const v1::Trial& t = trials[m.trial_id()];
      json value = m.has_value() ? json(m.value()) : json(nullptr);
      if (jsonl) {
        out_ << json{{"trial_id", m.trial_id()},
                     {"optimizer", t.optimizer()},
                     {"batch_size", t.batch_size()},
                     {"lr", t.lr()},
                     {"seed", t.seed()},
                     {"name", m.name()},
                     {"step", m.step()},
                     {"value", value},
                     {"recorded_at", m.recorded_at()}}
                    .dump()
             << "\n";
      } else {
        out_ << m.trial_id() << "," << t.optimizer() << "," << t.batch_size()
             << "," << json(t.lr()).dump() << "," << t.seed() << ","
             << CsvQuote(m.name()) << "," << m.step() << ","
             << (m.has_value() ? value.dump() : "") << ","
             << json(m.recorded_at()).dump() << "\n";
      }
      ++rows;
    }
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return Fail(s);
  out_.flush();
  err_ << "exported " << rows << " metric values\n";
  return kExitOk;
}

}  // namespace megabatch::cli
