// A minimal HTTP/1.0 GET over loopback for end-to-end tests (a coordinator's
// /metrics, Prometheus's HTTP API).
#ifndef MEGABATCH_TESTS_TESTING_HTTP_H_
#define MEGABATCH_TESTS_TESTING_HTTP_H_

#include <string>

namespace megabatch::testing {

struct HttpResponse {
  int status = 0;  // 0: no answer (refused, timed out, malformed)
  std::string body;
};

// GET http://127.0.0.1:port/path_and_query, up to 10 s. `headers`: extra
// "Name: value\r\n" lines.
HttpResponse HttpGet(int port, const std::string& path_and_query,
                     const std::string& headers = "");

// Percent-encodes a query parameter value.
std::string UrlEncode(const std::string& s);

}  // namespace megabatch::testing

#endif  // MEGABATCH_TESTS_TESTING_HTTP_H_
