// Certificates for TLS tests, made by the openssl command.
#ifndef MEGABATCH_TESTS_TESTING_TLS_H_
#define MEGABATCH_TESTS_TESTING_TLS_H_

#include <filesystem>

namespace megabatch::testing {

// Writes into `dir`: ca.pem/ca.key (a CA); server.pem/server.key (for
// localhost and 127.0.0.1, signed by the CA); worker.pem/worker.key (a client
// certificate with CN gpu-node-7, signed by the CA); rogue.pem (another CA)
// and stranger.pem/stranger.key (signed by it). A gtest failure if openssl
// fails (its log: DIR/openssl.log).
void MakeCertificates(const std::filesystem::path& dir);

}  // namespace megabatch::testing

#endif  // MEGABATCH_TESTS_TESTING_TLS_H_
