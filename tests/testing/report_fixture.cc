#include "tests/testing/report_fixture.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "server/spec/sweep_spec.h"
#include "server/store/sweep_store.h"
#include "tests/testing/status_matchers.h"

namespace megabatch::testing {
namespace {

constexpr const char* kSpec = R"yaml(
name: report-fixture
optimizers: [{name: lamb}, {name: adamw}]
batch_sizes: [128, 256, 512, 1024]
base: {lr: 0.01}
lr_multipliers: [1, 2]
seeds: [0, 1]
target: {metric: test_accuracy, value: 0.8}
)yaml";

struct Outcome {
  const char* state;
  int steps_to_target;  // 0: not reached
  double accuracy;      // best test accuracy
  double noise_scale;   // last gradient_noise_scale; 0: none logged
};

// (optimizer, batch, lr multiplier, seed) -> outcome; seed -1: both seeds.
const std::map<std::tuple<std::string, int, int, int>, Outcome>& Outcomes() {
  static const auto* outcomes =
      new std::map<std::tuple<std::string, int, int, int>, Outcome>{
          {{"lamb", 128, 1, -1}, {"completed", 6000, 0.85, 0}},
          {{"lamb", 128, 2, 0}, {"completed", 4900, 0.86, 0}},
          {{"lamb", 128, 2, 1}, {"completed", 5100, 0.84, 0}},
          {{"lamb", 256, 1, -1}, {"completed", 3500, 0.86, 0}},
          {{"lamb", 256, 2, -1}, {"completed", 3000, 0.87, 0}},
          {{"lamb", 512, 1, -1}, {"completed", 2200, 0.86, 0}},
          {{"lamb", 512, 2, -1}, {"completed", 2000, 0.88, 0}},
          {{"lamb", 1024, 1, 0}, {"completed", 1500, 0.83, 300}},
          {{"lamb", 1024, 1, 1}, {"completed", 1500, 0.83, 340}},
          {{"lamb", 1024, 2, -1}, {"diverged", 0, 0.5, 0}},
          {{"adamw", 128, 1, -1}, {"completed", 4000, 0.84, 0}},
          {{"adamw", 128, 2, -1}, {"completed", 4200, 0.84, 0}},
          {{"adamw", 256, 1, -1}, {"completed", 2800, 0.83, 0}},
          {{"adamw", 256, 2, -1}, {"completed", 2600, 0.85, 0}},
          {{"adamw", 512, 1, -1}, {"completed", 1800, 0.82, 0}},
          {{"adamw", 512, 2, 0}, {"completed", 1700, 0.81, 0}},
          {{"adamw", 512, 2, 1}, {"completed", 0, 0.79, 0}},
          {{"adamw", 1024, 1, 0}, {"completed", 0, 0.78, 0}},
          {{"adamw", 1024, 1, 1}, {"completed", 0, 0.77, 0}},
          {{"adamw", 1024, 2, 0}, {"diverged", 0, 0.5, 0}},
          {{"adamw", 1024, 2, 1}, {"completed", 0, 0.76, 0}},
      };
  return *outcomes;
}

#define FIXTURE_OK(expr) \
  do {                   \
    Status s_ = (expr);  \
    ASSERT_OK(s_);       \
  } while (0)

void WriteOutcomes(const std::string& path) {
  auto db = store::Db::Open(path);
  ASSERT_OK(db);
  store::Db& d = **db;
  store::Transaction tx(&d);
  FIXTURE_OK(tx.begin_status());
  auto trials = d.Prepare(
      "SELECT id, optimizer, batch_size, CAST(lr_multiplier AS INTEGER), seed "
      "FROM trials");
  auto update = d.Prepare(
      "UPDATE trials SET state = ?, attempts = 1, started_at = 100, "
      "finished_at = 200 WHERE id = ?");
  auto insert = d.Prepare(
      "INSERT INTO metrics (trial_id, name, step, value, recorded_at) "
      "VALUES (?, ?, ?, ?, 150)");
  ASSERT_TRUE(trials.ok() && update.ok() && insert.ok());
  std::vector<std::tuple<int64_t, std::string, int, int, int>> rows;
  FIXTURE_OK(store::ForEachRow(*trials, [&](store::Statement& q) {
    rows.emplace_back(q.Int(0), q.Text(1), static_cast<int>(q.Int(2)),
                      static_cast<int>(q.Int(3)), static_cast<int>(q.Int(4)));
  }));
  ASSERT_EQ(rows.size(), 32u);
  for (const auto& [id, optimizer, batch, multiplier, seed] : rows) {
    auto it = Outcomes().find({optimizer, batch, multiplier, seed});
    if (it == Outcomes().end())
      it = Outcomes().find({optimizer, batch, multiplier, -1});
    ASSERT_NE(it, Outcomes().end())
        << optimizer << " " << batch << " " << multiplier;
    const Outcome& o = it->second;
    update->Reset();
    update->Bind(1, std::string_view(o.state)).Bind(2, id);
    FIXTURE_OK(update->Run());
    const int final_step = o.steps_to_target > 0 ? o.steps_to_target
                           : std::string(o.state) == "diverged" ? 100
                                                                : 6000;
    auto put = [&](const char* name, int step, double value) {
      insert->Reset();
      insert->Bind(1, id)
          .Bind(2, std::string_view(name))
          .Bind(3, step)
          .Bind(4, value);
      return insert->Run();
    };
    FIXTURE_OK(put("train_loss", 1, 1.0));
    FIXTURE_OK(put("train_loss", final_step, 0.3));
    FIXTURE_OK(put("test_accuracy", final_step / 2, o.accuracy - 0.1));
    FIXTURE_OK(put("test_accuracy", final_step, o.accuracy));
    FIXTURE_OK(put("test_loss", final_step, 1 - o.accuracy));
    if (o.steps_to_target > 0) {
      FIXTURE_OK(put("target_reached_seconds", o.steps_to_target,
                     o.steps_to_target / 100.0));
      FIXTURE_OK(put("target_reached_samples", o.steps_to_target,
                     static_cast<double>(o.steps_to_target) * batch));
    }
    if (o.noise_scale > 0) {
      FIXTURE_OK(
          put("gradient_noise_scale", final_step / 2, 2 * o.noise_scale));
      FIXTURE_OK(put("gradient_noise_scale", final_step, o.noise_scale));
    }
  }
  FIXTURE_OK(tx.Commit());
}

}  // namespace

int64_t BuildReportFixture(const std::string& path) {
  int64_t sweep_id = 0;
  {
    auto store = store::SweepStore::Open(path);
    EXPECT_OK(store);
    if (!store.ok()) return 0;
    auto spec = spec::ParseSweepSpec(kSpec);
    EXPECT_OK(spec);
    auto created =
        (*store)->CreateSweep(*spec, spec::ExpandSweep(*spec), "", 100.0);
    EXPECT_OK(created);
    sweep_id = created.ok() ? created->id : 0;
  }
  WriteOutcomes(path);
  return sweep_id;
}

std::string DumpDatabase(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) !=
      SQLITE_OK) {
    ADD_FAILURE() << "cannot open " << path;
    sqlite3_close(db);
    return "";
  }
  std::string dump;
  // Appends every row of `sql`, each value with its type.
  auto rows = [&](const std::string& sql) {
    sqlite3_stmt* q = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &q, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db);
      return std::vector<std::string>();
    }
    std::vector<std::string> first;
    while (sqlite3_step(q) == SQLITE_ROW) {
      for (int c = 0; c < sqlite3_column_count(q); ++c) {
        const unsigned char* t = sqlite3_column_text(q, c);
        std::string v = t ? reinterpret_cast<const char*>(t) : "NULL";
        if (c == 0) first.push_back(v);
        dump += std::to_string(sqlite3_column_type(q, c)) + ":" + v + "|";
      }
      dump += "\n";
    }
    sqlite3_finalize(q);
    return first;
  };
  rows("PRAGMA user_version");
  rows("PRAGMA journal_mode");
  rows("SELECT type, name, sql FROM sqlite_master ORDER BY type, name");
  for (const std::string& table : rows("SELECT name FROM sqlite_master WHERE "
                                       "type = 'table' ORDER BY name")) {
    dump += "table " + table + "\n";
    // Every call may add to the audit; the rest is the stored data.
    if (table == "audit") continue;
    // Ordered by up to its first three columns.
    sqlite3_stmt* q = nullptr;
    const std::string all = "SELECT * FROM \"" + table + "\"";
    sqlite3_prepare_v2(db, all.c_str(), -1, &q, nullptr);
    const int columns = sqlite3_column_count(q);
    sqlite3_finalize(q);
    std::string order = " ORDER BY 1";
    for (int c = 2; c <= std::min(columns, 3); ++c)
      order += ", " + std::to_string(c);
    rows(all + order);
  }
  sqlite3_close(db);
  return dump;
}

}  // namespace megabatch::testing
