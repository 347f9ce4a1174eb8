// Access tokens and roles. A token is a random secret shown once at
// creation; the database keeps only its SHA-256. Clients send it as
// "authorization: Bearer <token>"; the coordinator maps it to a caller with a
// role: admin (everything, and any sweep), user (SweepService; cancels only
// its own sweeps), worker (WorkerService only).
#ifndef MEGABATCH_SERVER_AUTH_AUTH_H_
#define MEGABATCH_SERVER_AUTH_AUTH_H_

#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>

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

// Which verified client certificates are workers (with --tls-client-ca).
struct CertificatePolicy {
  // A certificate whose common name matches this (ECMAScript, whole name)
  // is the worker of that name; empty: no certificate is a worker (its
  // holder needs a token).
  std::string worker_common_name;
  // A PEM CRL signed by the client CA (`ca_file`, PEM), read again whenever
  // the file changes: a certificate it lists is refused on every call, with
  // or without a token. Empty: no revocation.
  std::string crl_file;
  std::string ca_file;
};

// Checks bearer tokens against the tokens table of a megabatch database,
// through its own read-only connection, on every call: a revoked token stops
// working at the next call. Thread-safe.
class Authenticator {
 public:
  // The database must exist and carry the tokens table (schema 5+).
  // INVALID_ARGUMENT naming the flag for a bad pattern, CRL or CA.
  static Result<std::unique_ptr<Authenticator>> Open(
      const std::string& db_path, CertificatePolicy certificates = {});

  // The caller a verified client certificate (`pem`, its `common_name`)
  // makes: a worker when the policy says so, else nullopt (a token must
  // say who calls). UNAUTHENTICATED for a revoked certificate.
  Result<std::optional<Caller>> CertificateCaller(
      const std::string& pem, const std::string& common_name) const;

  // `authorization` is the header's value ("Bearer <token>"); nullopt when
  // the header is absent. UNAUTHENTICATED for a missing, malformed, unknown
  // or revoked token.
  Result<Caller> Authenticate(
      const std::optional<std::string_view>& authorization) const;

 private:
  Authenticator(std::unique_ptr<store::Db> db, CertificatePolicy certificates);
  // The serial numbers (hex) the CRL revokes, read again when its file
  // changed since the last call.
  Status LoadRevocationsLocked() const REQUIRES(mu_);

  const CertificatePolicy certificates_;
  const std::regex worker_common_name_;
  mutable Mutex mu_;
  std::unique_ptr<store::Db> db_ GUARDED_BY(mu_);
  mutable std::set<std::string> revoked_ GUARDED_BY(mu_);
  // Serial numbers of the client certificates seen, by their PEM: a call
  // does not parse its caller's certificate again (bounded; cleared when
  // full).
  mutable std::unordered_map<std::string, std::string> serial_of_pem_
      GUARDED_BY(mu_);
  mutable int64_t crl_mtime_ns_ GUARDED_BY(mu_) = -1;
};

}  // namespace megabatch::auth

#endif  // MEGABATCH_SERVER_AUTH_AUTH_H_
