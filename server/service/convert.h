// Translation between store rows and megabatch.v1 protos.
#ifndef MEGABATCH_SERVER_SERVICE_CONVERT_H_
#define MEGABATCH_SERVER_SERVICE_CONVERT_H_

#include "megabatch/v1/megabatch.pb.h"
#include "server/report/report.h"
#include "server/store/read_only.h"
#include "server/store/sweep_store.h"

namespace megabatch::service {

v1::TrialState ToProto(store::TrialState s);
v1::SweepState ToProto(store::SweepState s);
void ToProto(const store::SweepRow& row, v1::Sweep* out);
void ToProto(const store::TrialRow& row, v1::Trial* out);
void ToProto(const store::WorkerRow& row, v1::Worker* out);
// One report row, column by column (common/report_columns.h).
void SetScalingRow(const report::ScalingRow& row, v1::ScalingRow* out);
void ToProto(const report::SweepReport& report, v1::SweepReport* out);
void ToProto(const store::QueryResult& result, v1::QueryResponse* out);
void ToProto(const store::MetricRecord& record, v1::MetricRow* out);

}  // namespace megabatch::service

#endif  // MEGABATCH_SERVER_SERVICE_CONVERT_H_
