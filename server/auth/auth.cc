#include "server/auth/auth.h"

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <memory>

#include "common/channel.h"
#include "common/sha256.h"

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

// OpenSSL objects, freed on scope exit.
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct CrlFree {
  void operator()(X509_CRL* c) const { X509_CRL_free(c); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

std::unique_ptr<BIO, BioFree> MemoryBio(const std::string& text) {
  return std::unique_ptr<BIO, BioFree>(
      BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

X509Ptr ReadCertificate(const std::string& pem) {
  auto bio = MemoryBio(pem);
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

// A serial number as upper-case hex.
std::string SerialHex(const ASN1_INTEGER* serial) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  if (bn == nullptr) return "";
  char* hex = BN_bn2hex(bn);
  std::string out = hex != nullptr ? hex : "";
  OPENSSL_free(hex);
  BN_free(bn);
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
  return megabatch::Sha256Hex(data);
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

Authenticator::Authenticator(std::unique_ptr<store::Db> db,
                             CertificatePolicy certificates)
    : certificates_(std::move(certificates)),
      worker_common_name_(certificates_.worker_common_name),
      db_(std::move(db)) {}

Result<std::unique_ptr<Authenticator>> Authenticator::Open(
    const std::string& db_path, CertificatePolicy certificates) {
  try {
    std::regex check(certificates.worker_common_name);
  } catch (const std::regex_error& e) {
    return InvalidArgumentError("--tls-worker-cn: '" +
                                certificates.worker_common_name +
                                "' is not a regular expression: " + e.what());
  }
  if (!certificates.crl_file.empty() && certificates.ca_file.empty()) {
    return InvalidArgumentError("--tls-crl: needs --tls-client-ca");
  }
  MEGABATCH_ASSIGN_OR_RETURN(std::unique_ptr<store::Db> db,
                             store::Db::OpenReadOnly(db_path));
  std::unique_ptr<Authenticator> auth(
      new Authenticator(std::move(db), std::move(certificates)));
  MutexLock lock(&auth->mu_);
  MEGABATCH_RETURN_IF_ERROR(auth->LoadRevocationsLocked());
  // Fails now, not at the first call, if the table is missing.
  MEGABATCH_RETURN_IF_ERROR(auth->db_
                                ->Cached("SELECT name, role FROM tokens WHERE "
                                         "sha256 = ? AND revoked_at IS NULL")
                                .status());
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
  MEGABATCH_ASSIGN_OR_RETURN(store::CachedStatement q,
                             db_->Cached("SELECT name, role FROM tokens WHERE "
                                         "sha256 = ? AND revoked_at IS NULL"));
  q->Bind(1, hash);
  MEGABATCH_ASSIGN_OR_RETURN(bool row, q->Step());
  if (!row) {
    return Status(StatusCode::kUnauthenticated,
                  "authorization: unknown or revoked token");
  }
  Caller caller;
  caller.name = q->Text(0);
  caller.role = ParseRole(q->Text(1)).value_or(Role::kWorker);
  return caller;
}

Status Authenticator::LoadRevocationsLocked() const {
  if (certificates_.crl_file.empty()) return Status();
  const std::string& path = certificates_.crl_file;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return InvalidArgumentError("--tls-crl: cannot read " + path);
  }
  const int64_t mtime_ns =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (mtime_ns == crl_mtime_ns_) return Status();
  MEGABATCH_ASSIGN_OR_RETURN(std::string crl_pem,
                             ReadTextFile(path, "--tls-crl"));
  MEGABATCH_ASSIGN_OR_RETURN(
      std::string ca_pem,
      ReadTextFile(certificates_.ca_file, "--tls-client-ca"));
  auto crl_bio = MemoryBio(crl_pem);  // reads the string in place
  std::unique_ptr<X509_CRL, CrlFree> crl(
      PEM_read_bio_X509_CRL(crl_bio.get(), nullptr, nullptr, nullptr));
  X509Ptr ca = ReadCertificate(ca_pem);
  if (crl == nullptr) {
    return InvalidArgumentError("--tls-crl: " + path + " is not a PEM CRL");
  }
  if (ca == nullptr ||
      X509_CRL_verify(crl.get(), X509_get0_pubkey(ca.get())) != 1) {
    return InvalidArgumentError("--tls-crl: " + path +
                                " is not signed by the client CA " +
                                certificates_.ca_file);
  }
  std::set<std::string> revoked;
  STACK_OF(X509_REVOKED)* entries = X509_CRL_get_REVOKED(crl.get());
  for (int i = 0; i < sk_X509_REVOKED_num(entries); ++i) {
    revoked.insert(SerialHex(
        X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(entries, i))));
  }
  revoked_ = std::move(revoked);
  crl_mtime_ns_ = mtime_ns;
  return Status();
}

Result<std::optional<Caller>> Authenticator::CertificateCaller(
    const std::string& pem, const std::string& common_name) const {
  if (!certificates_.crl_file.empty()) {
    constexpr size_t kMaxCachedCertificates = 4096;
    MutexLock lock(&mu_);
    auto cached = serial_of_pem_.find(pem);
    if (cached == serial_of_pem_.end()) {
      X509Ptr cert = ReadCertificate(pem);
      if (cert == nullptr) {
        return Status(StatusCode::kUnauthenticated,
                      "client certificate: cannot be read");
      }
      if (serial_of_pem_.size() >= kMaxCachedCertificates) {
        serial_of_pem_.clear();
      }
      cached = serial_of_pem_
                   .emplace(pem, SerialHex(X509_get0_serialNumber(cert.get())))
                   .first;
    }
    const std::string serial = cached->second;
    // A CRL that cannot be read again refuses every certificate.
    if (Status loaded = LoadRevocationsLocked(); !loaded.ok()) {
      return Status(StatusCode::kUnauthenticated,
                    "client certificate: " + loaded.message());
    }
    if (revoked_.count(serial) != 0) {
      return Status(StatusCode::kUnauthenticated,
                    "client certificate '" + common_name + "' (serial " +
                        serial + ") is revoked");
    }
  }
  if (!certificates_.worker_common_name.empty() &&
      std::regex_match(common_name, worker_common_name_)) {
    return std::optional<Caller>(Caller{common_name, Role::kWorker});
  }
  return std::optional<Caller>();
}

}  // namespace megabatch::auth
