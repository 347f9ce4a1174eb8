// Text from other users (sweep names, query results, messages) made safe to
// show on a terminal or write into a log line: control characters cannot
// move the cursor, clear the screen, retitle the window or start a forged
// log line.
#ifndef MEGABATCH_COMMON_PRINTABLE_H_
#define MEGABATCH_COMMON_PRINTABLE_H_

#include <cstdio>
#include <string>
#include <string_view>

namespace megabatch {

// `text` with every C0 control character, DEL and C1 control character
// (U+0080..U+009F in UTF-8) written as an escape: "\n", "\t", "\r", or
// "\xNN" (C1: "\u00NN"); every other byte as it is. With `keep_newlines`,
// '\n', '\r' and '\t' are kept (for formats that quote them, such as CSV).
inline std::string Printable(std::string_view text,
                             bool keep_newlines = false) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const bool c1 = c == 0xc2 && i + 1 < text.size() &&
                    static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
                    static_cast<unsigned char>(text[i + 1]) <= 0x9f;
    if (c >= 0x20 && c != 0x7f && !c1) {
      out += text[i];
      continue;
    }
    char buf[8];
    if (c1) {
      std::snprintf(buf, sizeof buf, "\\u%04x",
                    static_cast<unsigned char>(text[++i]));
    } else if (keep_newlines && (c == '\n' || c == '\r' || c == '\t')) {
      out += text[i];
      continue;
    } else if (c == '\n') {
      std::snprintf(buf, sizeof buf, "\\n");
    } else if (c == '\r') {
      std::snprintf(buf, sizeof buf, "\\r");
    } else if (c == '\t') {
      std::snprintf(buf, sizeof buf, "\\t");
    } else {
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
    }
    out += buf;
  }
  return out;
}

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_PRINTABLE_H_
