// Certificates for TLS tests, made by the openssl command.
#ifndef MEGABATCH_TESTS_TESTING_TLS_H_
#define MEGABATCH_TESTS_TESTING_TLS_H_

#include <filesystem>
#include <string>

namespace megabatch::testing {

// Writes into `dir`: ca.pem/ca.key (a CA); server.pem/server.key (for
// localhost and 127.0.0.1, signed by the CA); worker.pem/worker.key (a client
// certificate with CN gpu-node-7, signed by the CA); rogue.pem (another CA)
// and stranger.pem/stranger.key (signed by it); laptop.pem/laptop.key (a
// client certificate with CN alice-laptop, signed by the CA); crl.pem (the
// CA's revocation list, empty). A gtest failure if openssl fails (its log:
// DIR/openssl.log).
void MakeCertificates(const std::filesystem::path& dir);

// Revokes DIR/`name`.pem: rewrites DIR/crl.pem with it listed.
void RevokeCertificate(const std::filesystem::path& dir,
                       const std::string& name);

}  // namespace megabatch::testing

#endif  // MEGABATCH_TESTS_TESTING_TLS_H_
