// The trainer <-> worker contract, in one place: megabatch-trainer's exit
// codes, the JSON lines it prints on stdout and the requests a --serve
// trainer reads on stdin. The trainer (worker/trainer/main.cc) writes with
// these functions and the worker (worker/daemon/) reads with them. Header
// only, nlohmann/json only: the trainer also builds on its own.
//
// stdout, one JSON object per line:
//   {"step": 12, "metrics": {"train_loss": 0.51, "lr": 0.01}}   (null:
//   non-finite)
//   {"event": "checkpoint", "step": 12, "path": ".../step-12.pt"}
//   {"event": "completed" | "diverged" | "failed", "message": "..."}   (last;
//   a failed event may add "retry": false: the trial's input is wrong)
// stdin of --serve, one per trial: {"config": "trial.json", "resume": ""}
#ifndef MEGABATCH_COMMON_TRAINER_PROTOCOL_H_
#define MEGABATCH_COMMON_TRAINER_PROTOCOL_H_

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/exit_codes.h"
#include "common/status.h"

namespace megabatch::protocol {

// megabatch-trainer's exit codes: those of every binary
// (common/exit_codes.h), and diverged.
inline constexpr int kExitCompleted = megabatch::kExitOk;
inline constexpr int kExitFailed = megabatch::kExitFailed;
inline constexpr int kExitUsage =
    megabatch::kExitUsage;  // bad arguments or config
inline constexpr int kExitDiverged = 3;

// Event names.
inline constexpr const char* kCompleted = "completed";
inline constexpr const char* kDiverged = "diverged";
inline constexpr const char* kFailed = "failed";
inline constexpr const char* kCheckpoint = "checkpoint";
// The trial stopped early with a checkpoint, asked to (SIGUSR1: its worker
// is draining); it resumes elsewhere.
inline constexpr const char* kPreempted = "preempted";

// How much of a bad line an error quotes.
inline constexpr size_t kQuotedBytes = 200;

template <typename Metrics>  // iterable of (name, value) pairs
std::string MetricsLine(int64_t step, const Metrics& metrics) {
  nlohmann::json values = nlohmann::json::object();
  for (const auto& [name, value] : metrics) {
    // JSON has no NaN/Inf: a non-finite value is written as null.
    values[name] =
        std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(nullptr);
  }
  return nlohmann::json{{"step", step}, {"metrics", values}}.dump();
}

inline std::string CheckpointLine(int64_t step, const std::string& path) {
  return nlohmann::json{{"event", kCheckpoint}, {"step", step}, {"path", path}}
      .dump();
}

inline std::string EventLine(const std::string& event,
                             const std::string& message, bool retry = true) {
  nlohmann::json line = {{"event", event}, {"message", message}};
  if (!retry) line["retry"] = false;
  return line.dump();
}

inline std::string ServeRequest(const std::string& config_path,
                                const std::string& resume_path) {
  return nlohmann::json{{"config", config_path}, {"resume", resume_path}}
      .dump();
}

struct ServeRequestFields {
  std::string config;
  std::string resume;  // empty: start fresh
};
inline Result<ServeRequestFields> ParseServeRequest(const std::string& line) {
  const nlohmann::json r = nlohmann::json::parse(line, nullptr, false);
  if (!r.is_object() || !r.contains("config") || !r["config"].is_string() ||
      !r.value("resume", nlohmann::json("")).is_string()) {
    return InvalidArgumentError(
        "a request is {\"config\": PATH, \"resume\": PATH}, not " +
        line.substr(0, kQuotedBytes));
  }
  return ServeRequestFields{r["config"].get<std::string>(),
                            r.value("resume", std::string())};
}

// One stdout line, decoded.
struct Line {
  // A metrics line: its step and values (NaN for null).
  int64_t step = 0;
  std::vector<std::pair<std::string, double>> metrics;
  // An event line: kCompleted, kDiverged, kFailed, kPreempted or
  // kCheckpoint; "" for
  // metrics.
  std::string event;
  std::string message;
  // For kFailed: false when a retry would fail the same way.
  bool retry = true;
  // For kCheckpoint: the step it holds (in `step`) and its file.
  std::string checkpoint_path;
};

// INVALID_ARGUMENT for anything but the lines above.
inline Result<Line> ParseLine(const std::string& text) {
  const nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
  const std::string quoted = text.substr(0, kQuotedBytes);
  if (doc.is_discarded() || !doc.is_object()) {
    return InvalidArgumentError("trainer output is not a JSON object: " +
                                quoted);
  }
  Line out;
  if (auto ev = doc.find("event"); ev != doc.end() && ev->is_string()) {
    out.event = ev->get<std::string>();
    if (auto m = doc.find("message"); m != doc.end() && m->is_string()) {
      out.message = m->get<std::string>();
    }
    if (auto r = doc.find("retry"); r != doc.end() && r->is_boolean()) {
      out.retry = r->get<bool>();
    }
    if (out.event == kCheckpoint) {
      auto step = doc.find("step");
      auto path = doc.find("path");
      if (step == doc.end() || !step->is_number_integer() ||
          path == doc.end() || !path->is_string()) {
        return InvalidArgumentError(
            "checkpoint event needs an integer step and a path: " + quoted);
      }
      out.step = step->get<int64_t>();
      out.checkpoint_path = path->get<std::string>();
    }
    return out;
  }
  auto step = doc.find("step");
  auto metrics = doc.find("metrics");
  if (step == doc.end() || !step->is_number_integer() || metrics == doc.end() ||
      !metrics->is_object()) {
    return InvalidArgumentError(
        "trainer output line needs an integer step and a metrics object: " +
        quoted);
  }
  out.step = step->get<int64_t>();
  for (const auto& [name, value] : metrics->items()) {
    if (value.is_number()) {
      out.metrics.emplace_back(name, value.get<double>());
    } else if (value.is_null()) {
      out.metrics.emplace_back(name, std::nan(""));  // a non-finite value
    } else {
      return InvalidArgumentError("metric " + name + " is not a number");
    }
  }
  return out;
}

}  // namespace megabatch::protocol

#endif  // MEGABATCH_COMMON_TRAINER_PROTOCOL_H_
