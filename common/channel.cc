#include "common/channel.h"

#include <grpcpp/support/client_interceptor.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

namespace megabatch {
namespace {

// Adds the authorization header to every call's initial metadata.
class BearerInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerInterceptor(const std::string& header) : header_(header) {}
  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", header_});
    }
    methods->Proceed();
  }

 private:
  const std::string& header_;
};

class BearerInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerInterceptorFactory(std::string token)
      : header_("Bearer " + std::move(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerInterceptor(header_);
  }

 private:
  const std::string header_;
};

std::string Trim(const std::string& s) {
  const char* ws = " \t\r\n";
  const size_t begin = s.find_first_not_of(ws);
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(ws) - begin + 1);
}

}  // namespace

Result<std::string> ReadTextFile(const std::string& path,
                                 const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (!in || !(text << in.rdbuf())) {
    return InvalidArgumentError(what + ": cannot read " + path);
  }
  return text.str();
}

Result<std::string> LoadToken(const std::string& token_file) {
  if (token_file.empty()) {
    const char* env = std::getenv("MEGABATCH_TOKEN");
    return env == nullptr ? std::string() : Trim(env);
  }
  MEGABATCH_ASSIGN_OR_RETURN(std::string text,
                             ReadTextFile(token_file, "--token-file"));
  std::string token = Trim(text);
  if (token.empty() || token.find_first_of(" \t\r\n") != std::string::npos) {
    return InvalidArgumentError("--token-file: " + token_file +
                                " must hold one token and nothing else");
  }
  return token;
}

Result<std::shared_ptr<grpc::Channel>> MakeChannel(
    const std::string& address, const ChannelOptions& options,
    const grpc::ChannelArguments& args) {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls_ca_file.empty()) {
    if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
      return InvalidArgumentError("--tls-cert/--tls-key: need --tls-ca (TLS)");
    }
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    MEGABATCH_ASSIGN_OR_RETURN(std::string ca,
                               ReadTextFile(options.tls_ca_file, "--tls-ca"));
    ssl.pem_root_certs = ca;
    if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
      return InvalidArgumentError(
          "--tls-cert and --tls-key: give both or neither");
    }
    if (!options.tls_cert_file.empty()) {
      MEGABATCH_ASSIGN_OR_RETURN(
          std::string cert, ReadTextFile(options.tls_cert_file, "--tls-cert"));
      MEGABATCH_ASSIGN_OR_RETURN(
          std::string key, ReadTextFile(options.tls_key_file, "--tls-key"));
      ssl.pem_cert_chain = cert;
      ssl.pem_private_key = key;
    }
    creds = grpc::SslCredentials(ssl);
  }
  if (options.token.empty())
    return grpc::CreateCustomChannel(address, creds, args);
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      factories;
  factories.push_back(
      std::make_unique<BearerInterceptorFactory>(options.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      address, creds, args, std::move(factories));
}

Result<std::shared_ptr<grpc::Channel>> MakeChannelWithTokenFile(
    const std::string& address, const std::string& token_file,
    ChannelOptions options, const grpc::ChannelArguments& args) {
  MEGABATCH_ASSIGN_OR_RETURN(std::string token, LoadToken(token_file));
  options.token = token;
  return MakeChannel(address, options, args);
}

}  // namespace megabatch
