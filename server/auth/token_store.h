// The tokens table: access tokens by name and role, only their SHA-256 (hex)
// stored. Its own read-write connection to the megabatch database (as the
// Authenticator has its own read-only one), so that `megabatch-coordinator
// token ...` and the coordinator's admin bootstrap need no SweepStore.
#ifndef MEGABATCH_SERVER_AUTH_TOKEN_STORE_H_
#define MEGABATCH_SERVER_AUTH_TOKEN_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "server/store/db.h"

namespace megabatch::auth {

struct TokenRow {
  int64_t id = 0;
  std::string name;
  std::string role;
  double created_at = 0;
  double revoked_at = 0;  // 0: active
};

// Thread-safe.
class TokenStore {
 public:
  // `db_path` must hold a megabatch database migrated by SweepStore::Open
  // (schema 5+: the tokens table). FAILED_PRECONDITION when it has none.
  static Result<std::unique_ptr<TokenStore>> Open(const std::string& db_path);

  // Refuses a hash already stored (ALREADY_EXISTS).
  Result<int64_t> Create(const std::string& name, const std::string& role,
                         const std::string& sha256_hex, double now);
  Result<std::vector<TokenRow>> List();
  // NOT_FOUND for an unknown id, FAILED_PRECONDITION for one already revoked.
  Status Revoke(int64_t token_id, double now);

 private:
  explicit TokenStore(std::unique_ptr<store::Db> db) : db_(std::move(db)) {}
  Mutex mu_;
  std::unique_ptr<store::Db> db_ GUARDED_BY(mu_);
};

}  // namespace megabatch::auth

#endif  // MEGABATCH_SERVER_AUTH_TOKEN_STORE_H_
