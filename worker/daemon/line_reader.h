// Byte streams of a trainer, cut for the worker: LineReader splits stdout
// into whole lines (a partial line waits for its end, across reads and, for
// a warm trainer, across trials); TailBuffer keeps the last bytes of stderr
// for a failed trial's report.
#ifndef MEGABATCH_WORKER_DAEMON_LINE_READER_H_
#define MEGABATCH_WORKER_DAEMON_LINE_READER_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace megabatch::worker {

class LineReader {
 public:
  void Append(std::string_view bytes) { buffer_.append(bytes); }
  // The next whole line without its '\n' (empty lines skipped); false when
  // none is complete yet.
  bool Next(std::string* line);
  // Bytes that do not make a whole line yet.
  size_t pending_bytes() const { return buffer_.size() - start_; }

 private:
  std::string buffer_;
  size_t start_ = 0;  // where the unread part begins
};

class TailBuffer {
 public:
  explicit TailBuffer(size_t limit) : limit_(limit) {}
  void Append(std::string_view bytes);
  const std::string& str() const { return tail_; }

 private:
  size_t limit_;
  std::string tail_;
};

}  // namespace megabatch::worker

#endif  // MEGABATCH_WORKER_DAEMON_LINE_READER_H_
