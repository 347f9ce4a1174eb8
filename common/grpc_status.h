// Translation between megabatch::Status and grpc::Status (same code numbers).
#ifndef MEGABATCH_COMMON_GRPC_STATUS_H_
#define MEGABATCH_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "common/status.h"

namespace megabatch {

inline grpc::Status ToGrpcStatus(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), s.message());
}

inline Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return Status();
  return Status(static_cast<StatusCode>(s.error_code()), s.error_message());
}

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_GRPC_STATUS_H_
