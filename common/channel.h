// Client channels to the coordinator for the CLI, the worker and tests:
// plaintext or TLS, with an access token sent on every call.
#ifndef MEGABATCH_COMMON_CHANNEL_H_
#define MEGABATCH_COMMON_CHANNEL_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "common/status.h"

namespace megabatch {

struct ChannelOptions {
  // Sent as "authorization: Bearer <token>" on every call; empty: none.
  std::string token;
  // PEM file of the CA that signed the coordinator's certificate: TLS.
  // Empty: plaintext.
  std::string tls_ca_file;
  // Optional client certificate chain and key (PEM files), with TLS.
  std::string tls_cert_file;
  std::string tls_key_file;
};

// INVALID_ARGUMENT naming the option for an unreadable file or a client
// certificate without its key (or the reverse).
Result<std::shared_ptr<grpc::Channel>> MakeChannel(
    const std::string& address, const ChannelOptions& options,
    const grpc::ChannelArguments& args = grpc::ChannelArguments());

// MakeChannel with options.token from LoadToken(token_file): what the CLI and
// the worker do with their --token-file flag.
Result<std::shared_ptr<grpc::Channel>> MakeChannelWithTokenFile(
    const std::string& address, const std::string& token_file,
    ChannelOptions options,
    const grpc::ChannelArguments& args = grpc::ChannelArguments());

// The token from `token_file` when given, else from $MEGABATCH_TOKEN, else
// empty. Surrounding whitespace is dropped. INVALID_ARGUMENT naming the file
// when it cannot be read or holds no token.
Result<std::string> LoadToken(const std::string& token_file);

// The whole file. INVALID_ARGUMENT naming `what` and the path on failure.
Result<std::string> ReadTextFile(const std::string& path,
                                 const std::string& what);

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_CHANNEL_H_
