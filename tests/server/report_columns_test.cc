// The report row defined once (common/report_columns.h): the sweep_scaling
// view, report::ScalingRow, v1::ScalingRow and docs/results-database.md each
// have every column, of its kind, and nothing the table lacks; a row goes
// into the proto column by column unchanged.
#include "common/report_columns.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "megabatch/v1/megabatch.pb.h"
#include "server/report/report.h"
#include "server/service/convert.h"
#include "server/store/sweep_store.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace megabatch {
namespace {

using google::protobuf::FieldDescriptor;

// A row with every member set to a value of its own.
report::ScalingRow FullRow() {
  report::ScalingRow r;
  r.optimizer = "lamb";
  r.batch_size = 4096;
  r.lrs_tried = 3;
  r.trials = 6;
  r.diverged_trials = 1;
  r.best_lr = 0.02;
  double x = 1.5;
  for (std::optional<double>* figure :
       {&r.max_stable_lr, &r.best_test_accuracy, &r.best_test_loss,
        &r.best_val_accuracy, &r.best_val_loss, &r.best_target_value,
        &r.test_accuracy, &r.test_loss, &r.steps_to_target,
        &r.samples_to_target, &r.seconds_to_target, &r.scaling_efficiency,
        &r.gradient_noise_scale, &r.noise_scale_at_10pct,
        &r.noise_scale_at_50pct, &r.noise_scale_at_100pct,
        &r.noise_scale_at_target, &r.train_samples, &r.samples_per_second}) {
    *figure = x;
    x += 1;
  }
  r.shared_core_trials = 2;
  return r;
}

TEST(ReportColumnsTest, EveryColumnIsAMemberAndAProtoFieldOfItsKind) {
  const report::ScalingRow row = FullRow();
  const auto* descriptor = v1::ScalingRow::descriptor();
  std::set<std::string> names;
  for (const ReportColumn& c : kReportColumns) {
    SCOPED_TRACE(std::string(c.name));
    EXPECT_TRUE(names.insert(std::string(c.name)).second) << "twice";
    const nlohmann::json value = report::ColumnValue(row, c.name);
    const FieldDescriptor* field =
        descriptor->FindFieldByName(std::string(c.name));
    ASSERT_NE(field, nullptr) << "v1::ScalingRow has no such field";
    switch (c.kind) {
      case ColumnKind::kText:
        EXPECT_TRUE(value.is_string()) << "report::ScalingRow lacks it";
        EXPECT_EQ(field->cpp_type(), FieldDescriptor::CPPTYPE_STRING);
        break;
      case ColumnKind::kInt:
        EXPECT_TRUE(value.is_number_integer()) << "report::ScalingRow lacks it";
        EXPECT_TRUE(field->cpp_type() == FieldDescriptor::CPPTYPE_INT32 ||
                    field->cpp_type() == FieldDescriptor::CPPTYPE_INT64);
        break;
      case ColumnKind::kNumber:
        EXPECT_TRUE(value.is_number()) << "report::ScalingRow lacks it";
        EXPECT_EQ(field->cpp_type(), FieldDescriptor::CPPTYPE_DOUBLE);
        break;
    }
  }
  for (int i = 0; i < descriptor->field_count(); ++i) {
    EXPECT_EQ(names.count(descriptor->field(i)->name()), 1u)
        << "v1::ScalingRow." << descriptor->field(i)->name()
        << " is no column of common/report_columns.h";
  }
}

TEST(ReportColumnsTest, ARowGoesIntoTheProtoUnchanged) {
  const report::ScalingRow row = FullRow();
  v1::ScalingRow proto;
  service::SetScalingRow(row, &proto);
  const auto* reflection = proto.GetReflection();
  for (const ReportColumn& c : kReportColumns) {
    SCOPED_TRACE(std::string(c.name));
    const FieldDescriptor* field =
        proto.GetDescriptor()->FindFieldByName(std::string(c.name));
    ASSERT_NE(field, nullptr);
    const nlohmann::json want = report::ColumnValue(row, c.name);
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        EXPECT_EQ(reflection->GetString(proto, field), want);
        break;
      case FieldDescriptor::CPPTYPE_INT32:
        EXPECT_EQ(reflection->GetInt32(proto, field), want);
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        EXPECT_EQ(reflection->GetInt64(proto, field), want);
        break;
      default:
        EXPECT_TRUE(reflection->HasField(proto, field));
        EXPECT_EQ(reflection->GetDouble(proto, field), want);
    }
  }
  // An absent figure stays unset.
  report::ScalingRow sparse = row;
  sparse.steps_to_target.reset();
  v1::ScalingRow unset;
  service::SetScalingRow(sparse, &unset);
  EXPECT_FALSE(unset.has_steps_to_target());
}

TEST(ReportColumnsTest, TheViewAndTheDocsHaveEveryColumn) {
  testing::TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto store, store::SweepStore::Open(dir.File("m.db")));
  ASSERT_OK_AND_ASSIGN(auto db, store::Db::Open(dir.File("m.db")));
  ASSERT_OK_AND_ASSIGN(auto info,
                       db->Prepare("SELECT name FROM "
                                   "pragma_table_info('sweep_scaling')"));
  std::set<std::string> view;
  ASSERT_OK(store::ForEachRow(
      info, [&](store::Statement& q) { view.insert(q.Text(0)); }));
  std::ifstream in(MEGABATCH_RESULTS_DOC);
  std::stringstream doc;
  doc << in.rdbuf();
  const std::string text = doc.str();
  const size_t start = text.find("- `sweep_scaling`");
  ASSERT_NE(start, std::string::npos);
  const std::string entry =
      text.substr(start, text.find("\n- ", start + 1) - start);
  for (const ReportColumn& c : kReportColumns) {
    EXPECT_EQ(view.count(std::string(c.name)), 1u)
        << "sweep_scaling has no column " << c.name;
    EXPECT_NE(entry.find(std::string(c.name)), std::string::npos)
        << "docs/results-database.md's sweep_scaling entry lacks " << c.name;
  }
}

}  // namespace
}  // namespace megabatch
