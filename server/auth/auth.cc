#include "server/auth/auth.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

namespace megabatch::auth {
namespace {

constexpr std::string_view kTokenPrefix = "mbt_";
constexpr size_t kMaxHeaderLength = 512;

std::string Hex(const unsigned char* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out += kDigits[data[i] >> 4];
    out += kDigits[data[i] & 0xf];
  }
  return out;
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kAdmin:
      return "admin";
    case Role::kUser:
      return "user";
    case Role::kWorker:
      return "worker";
  }
  return "unknown";
}

std::optional<Role> ParseRole(std::string_view name) {
  for (Role r : {Role::kAdmin, Role::kUser, Role::kWorker}) {
    if (name == RoleName(r)) return r;
  }
  return std::nullopt;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), digest, &n, EVP_sha256(), nullptr);
  return Hex(digest, n);
}

Result<std::string> NewToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    return UnavailableError("cannot draw random bytes for a token");
  }
  return std::string(kTokenPrefix) + Hex(bytes, sizeof bytes);
}

bool IsWellFormedToken(std::string_view token) {
  constexpr size_t kHexDigits = 64;
  if (token.size() != kTokenPrefix.size() + kHexDigits ||
      token.substr(0, kTokenPrefix.size()) != kTokenPrefix) {
    return false;
  }
  return token.find_first_not_of("0123456789abcdef", kTokenPrefix.size()) ==
         std::string_view::npos;
}

Result<std::unique_ptr<Authenticator>> Authenticator::Open(
    const std::string& db_path) {
  Result<std::unique_ptr<store::Db>> db = store::Db::OpenReadOnly(db_path);
  if (!db.ok()) return db.status();
  std::unique_ptr<Authenticator> auth(new Authenticator(std::move(*db)));
  MutexLock lock(&auth->mu_);
  // Fails now, not at the first call, if the table is missing.
  Result<store::CachedStatement> q = auth->db_->Cached(
      "SELECT name, role FROM tokens WHERE sha256 = ? AND revoked_at IS NULL");
  if (!q.ok()) return q.status();
  return auth;
}

Result<Caller> Authenticator::Authenticate(
    const std::optional<std::string_view>& authorization) const {
  if (!authorization.has_value()) {
    return Status(StatusCode::kUnauthenticated,
                  "missing 'authorization: Bearer <token>' metadata");
  }
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization->size() > kMaxHeaderLength ||
      authorization->substr(0, kBearer.size()) != kBearer) {
    return Status(StatusCode::kUnauthenticated,
                  "authorization: expected 'Bearer <token>'");
  }
  const std::string hash = Sha256Hex(authorization->substr(kBearer.size()));
  MutexLock lock(&mu_);
  Result<store::CachedStatement> q = db_->Cached(
      "SELECT name, role FROM tokens WHERE sha256 = ? AND revoked_at IS NULL");
  if (!q.ok()) return q.status();
  (*q)->Bind(1, hash);
  Result<bool> row = (*q)->Step();
  if (!row.ok()) return row.status();
  if (!*row) {
    return Status(StatusCode::kUnauthenticated,
                  "authorization: unknown or revoked token");
  }
  Caller caller;
  caller.name = (*q)->Text(0);
  caller.role = ParseRole((*q)->Text(1)).value_or(Role::kWorker);
  return caller;
}

}  // namespace megabatch::auth
