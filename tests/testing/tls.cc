#include "tests/testing/tls.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace megabatch::testing {
namespace {

// Writes the CA's current revocation list to crl.pem (whole, or not at all).
constexpr const char* kGenerateCrl =
    "openssl ca -config ca.cnf -keyfile ca.key -cert ca.pem -gencrl "
    "-out crl.tmp\n"
    "mv crl.tmp crl.pem\n";

}  // namespace

void MakeCertificates(const std::filesystem::path& dir) {
  const std::string d = dir.string();
  const std::string key =
      "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::string script =
      "set -e; cd '" + d +
      "'; exec 2>openssl.log\n"
      "openssl req -x509 " +
      key +
      " -keyout ca.key -out ca.pem -days 2 -subj '/CN=test CA'\n"
      "openssl req -x509 " +
      key +
      " -keyout rogue.key -out rogue.pem -days 2 -subj '/CN=rogue'\n"
      "openssl req " +
      key +
      " -keyout server.key -out server.csr -subj '/CN=localhost'\n"
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext\n"
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
      "-CAcreateserial "
      "-out server.pem -days 2 -extfile server.ext\n"
      "openssl req " +
      key +
      " -keyout worker.key -out worker.csr -subj '/CN=gpu-node-7'\n"
      "openssl x509 -req -in worker.csr -CA ca.pem -CAkey ca.key "
      "-CAcreateserial "
      "-out worker.pem -days 2\n"
      "openssl req " +
      key +
      " -keyout stranger.key -out stranger.csr -subj '/CN=stranger'\n"
      "openssl x509 -req -in stranger.csr -CA rogue.pem -CAkey rogue.key "
      "-CAcreateserial "
      "-out stranger.pem -days 2\n"
      "openssl req " +
      key +
      " -keyout laptop.key -out laptop.csr -subj '/CN=alice-laptop'\n"
      "openssl x509 -req -in laptop.csr -CA ca.pem -CAkey ca.key "
      "-CAcreateserial -out laptop.pem -days 2\n"
      // The CA's revocation list (empty): RevokeCertificate adds to it.
      "printf '[ca]\\ndefault_ca = test\\n[test]\\ndatabase = index.txt\\n"
      "crlnumber = crlnumber\\ndefault_md = sha256\\ndefault_crl_days = 2\\n'"
      " > ca.cnf\n"
      "touch index.txt; echo 01 > crlnumber\n" +
      kGenerateCrl;
  std::ofstream(dir / "pki.sh") << script;
  ASSERT_EQ(std::system(("bash '" + d + "/pki.sh'").c_str()), 0)
      << "openssl failed; see " << d << "/openssl.log";
}

void RevokeCertificate(const std::filesystem::path& dir,
                       const std::string& name) {
  const std::string d = dir.string();
  const std::string script =
      "set -e; cd '" + d +
      "'; exec 2>>openssl.log\n"
      "openssl ca -config ca.cnf -keyfile ca.key -cert ca.pem -revoke " +
      name + ".pem\n" + kGenerateCrl;
  std::ofstream(dir / "revoke.sh") << script;
  ASSERT_EQ(std::system(("bash '" + d + "/revoke.sh'").c_str()), 0)
      << "openssl failed; see " << d << "/openssl.log";
}

}  // namespace megabatch::testing
