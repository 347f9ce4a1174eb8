#include "worker/trainer/data/tokenizer.h"

#include <fcntl.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "worker/trainer/data/files.h"
#include "worker/trainer/data/text_corpus.h"

namespace megabatch::trainer {
namespace {

namespace fs = std::filesystem;

// Changes whenever the training options or the ids format change.
constexpr const char* kTokenizerVersion = "spm-unigram-v1";

// Feeds SentencePiece the documents line by line (it trains on sentences; a
// line is one here).
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::string>& documents)
      : documents_(documents) {
    Advance();
  }
  bool done() const override { return doc_ >= documents_.size(); }
  void Next() override { Advance(); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void Advance() {
    while (doc_ < documents_.size()) {
      const std::string& d = documents_[doc_];
      if (pos_ >= d.size()) {
        ++doc_;
        pos_ = 0;
        continue;
      }
      size_t end = d.find('\n', pos_);
      if (end == std::string::npos) end = d.size();
      line_ = d.substr(pos_, end - pos_);
      pos_ = end + 1;
      if (!line_.empty()) return;
    }
  }
  const std::vector<std::string>& documents_;
  size_t doc_ = 0, pos_ = 0;
  std::string line_;
};

std::string EncodeDocuments(const Tokenizer& tokenizer,
                            const std::vector<std::string>& documents) {
  std::vector<int32_t> ids;
  for (const auto& d : documents) {
    for (int id : tokenizer.Encode(d)) ids.push_back(id);
    ids.push_back(Tokenizer::kSeparatorId);
  }
  return std::string(reinterpret_cast<const char*>(ids.data()),
                     ids.size() * sizeof(int32_t));
}

// Holds an exclusive flock on a file while alive.
class FileLock {
 public:
  explicit FileLock(const std::string& path)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ < 0) return;
    while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
    }
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

}  // namespace

Tokenizer::Tokenizer(
    std::unique_ptr<sentencepiece::SentencePieceProcessor> processor,
    std::string model)
    : processor_(std::move(processor)), model_(std::move(model)) {}

Tokenizer::~Tokenizer() = default;

Result<std::unique_ptr<Tokenizer>> Tokenizer::Train(
    const std::vector<std::string>& documents, int vocab_size, int threads) {
  LineIterator lines(documents);
  std::string model;
  auto status = sentencepiece::SentencePieceTrainer::Train(
      {{"model_type", "unigram"},
       {"vocab_size", std::to_string(vocab_size)},
       {"byte_fallback", "true"},
       {"normalization_rule_name", "identity"},
       {"remove_extra_whitespaces", "false"},
       {"user_defined_symbols", "[MASK]"},
       {"num_threads", std::to_string(threads)},
       {"minloglevel", "2"}},
      &lines, &model);
  if (!status.ok()) {
    return InvalidArgumentError("model.vocab_size: training a " +
                                std::to_string(vocab_size) +
                                "-token SentencePiece vocabulary failed: " +
                                std::string(status.message()));
  }
  return FromModel(model, "the trained model");
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::FromModel(
    const std::string& model, const std::string& origin) {
  auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
  auto loaded = processor->LoadFromSerializedProto(model);
  if (!loaded.ok()) {
    return DataLossError("tokenizer " + origin +
                         " is unreadable: " + std::string(loaded.message()));
  }
  if (processor->PieceToId("[MASK]") != kMaskId ||
      processor->eos_id() != kSeparatorId ||
      processor->unk_id() != kUnknownId) {
    return DataLossError("tokenizer " + origin + " has unexpected special ids");
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(processor), model));
}

std::vector<int> Tokenizer::Encode(const std::string& text) const {
  std::vector<int> ids;
  processor_->Encode(text, &ids).IgnoreError();
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  std::string text;
  processor_->Decode(ids, &text).IgnoreError();
  return text;
}

int Tokenizer::vocab_size() const { return processor_->GetPieceSize(); }

Result<TokenizedCorpus> TokenizeCorpus(const TokenizeOptions& options) {
  auto corpus =
      LoadTextCorpus(options.corpus_path, options.validation_fraction);
  if (!corpus.ok()) return corpus.status();
  uint64_t key = Fnv1a64(kTokenizerVersion);
  for (const auto* split : {&corpus->train, &corpus->validation}) {
    for (const auto& d : *split)
      key = Fnv1a64(std::string_view(d.c_str(), d.size() + 1), key);
    key = Fnv1a64("|", key);
  }
  char stem[64];
  std::snprintf(stem, sizeof(stem), "spm-%016llx-%d",
                static_cast<unsigned long long>(key), options.vocab_size);
  std::error_code ec;
  fs::create_directories(options.cache_dir, ec);
  if (ec)
    return InternalError("tokenizer cache " + options.cache_dir + ": " +
                         ec.message());
  const fs::path base = fs::path(options.cache_dir) / stem;
  TokenizedCorpus out;
  out.model_path = base.string() + ".model";
  out.train_path = base.string() + ".train.ids";
  out.validation_path = base.string() + ".validation.ids";
  FileLock lock(base.string() + ".lock");
  if (!lock.ok()) {
    return InternalError("tokenizer cache " + options.cache_dir + ": " +
                         std::strerror(errno));
  }
  std::unique_ptr<Tokenizer> tokenizer;
  if (auto model = ReadFileBytes(out.model_path, "tokenizer cache");
      model.ok()) {
    auto loaded = Tokenizer::FromModel(*model, out.model_path);
    if (!loaded.ok()) {
      return DataLossError(loaded.status().message() +
                           " (delete it to train it again)");
    }
    tokenizer = std::move(*loaded);
  } else {
    auto trained =
        Tokenizer::Train(corpus->train, options.vocab_size, options.threads);
    if (!trained.ok()) return trained.status();
    tokenizer = std::move(*trained);
    MEGABATCH_RETURN_IF_ERROR(WriteFileAtomically(
        out.model_path, tokenizer->model(), "tokenizer cache"));
  }
  out.vocab_size = tokenizer->vocab_size();
  for (auto [path, split] :
       {std::pair{&out.train_path, &corpus->train},
        std::pair{&out.validation_path, &corpus->validation}}) {
    if (fs::exists(*path, ec)) continue;
    MEGABATCH_RETURN_IF_ERROR(WriteFileAtomically(
        *path, EncodeDocuments(*tokenizer, *split), "tokenizer cache"));
  }
  return out;
}

}  // namespace megabatch::trainer
