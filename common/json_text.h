// A JSON value as error messages quote it: compact, invalid UTF-8 replaced,
// cut at 60 characters. Header-only (nlohmann/json).
#ifndef MEGABATCH_COMMON_JSON_TEXT_H_
#define MEGABATCH_COMMON_JSON_TEXT_H_

#include <nlohmann/json.hpp>
#include <string>

namespace megabatch {

inline std::string DescribeJson(const nlohmann::json& v) {
  std::string s =
      v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_JSON_TEXT_H_
