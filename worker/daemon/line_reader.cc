#include "worker/daemon/line_reader.h"

namespace megabatch::worker {

bool LineReader::Next(std::string* line) {
  while (true) {
    const size_t nl = buffer_.find('\n', start_);
    if (nl == std::string::npos) {
      // Keep only the partial line, so the buffer does not grow with reads.
      buffer_.erase(0, start_);
      start_ = 0;
      return false;
    }
    line->assign(buffer_, start_, nl - start_);
    start_ = nl + 1;
    if (!line->empty()) return true;
  }
}

void TailBuffer::Append(std::string_view bytes) {
  tail_.append(bytes);
  if (tail_.size() > limit_) tail_.erase(0, tail_.size() - limit_);
}

}  // namespace megabatch::worker
