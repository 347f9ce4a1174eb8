// Access tokens and roles. A token is a random secret shown once at
// creation; the database keeps only its SHA-256. Clients send it as
// "authorization: Bearer <token>"; the coordinator maps it to a caller with a
// role: admin (everything, and any sweep), user (SweepService; cancels only
// its own sweeps), worker (WorkerService only).
#ifndef MEGABATCH_SERVER_AUTH_AUTH_H_
#define MEGABATCH_SERVER_AUTH_AUTH_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/mutex.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "server/store/db.h"

namespace megabatch::auth {

enum class Role { kAdmin, kUser, kWorker };

const char* RoleName(Role role);
std::optional<Role> ParseRole(std::string_view name);

// Lower-case hex SHA-256 (OpenSSL's libcrypto).
std::string Sha256Hex(std::string_view data);

// A new token: "mbt_" and 64 hex digits from 32 random bytes (OpenSSL's
// RAND_bytes). UNAVAILABLE if the random source fails.
Result<std::string> NewToken();
// True for text NewToken() could have made.
bool IsWellFormedToken(std::string_view token);

// Who is calling.
struct Caller {
  std::string name;  // the token's name; empty without authentication
  Role role = Role::kAdmin;
};

// Checks bearer tokens against the tokens table of a megabatch database,
// through its own read-only connection, on every call: a revoked token stops
// working at the next call. Thread-safe.
class Authenticator {
 public:
  // The database must exist and carry the tokens table (schema 5+).
  static Result<std::unique_ptr<Authenticator>> Open(
      const std::string& db_path);

  // `authorization` is the header's value ("Bearer <token>"); nullopt when
  // the header is absent. UNAUTHENTICATED for a missing, malformed, unknown
  // or revoked token.
  Result<Caller> Authenticate(
      const std::optional<std::string_view>& authorization) const;

 private:
  explicit Authenticator(std::unique_ptr<store::Db> db) : db_(std::move(db)) {}

  mutable Mutex mu_;
  std::unique_ptr<store::Db> db_ GUARDED_BY(mu_);
};

}  // namespace megabatch::auth

#endif  // MEGABATCH_SERVER_AUTH_AUTH_H_
