// The tiny_bert tokenizer: a SentencePiece unigram model (Debian's
// libsentencepiece) trained on a corpus's training documents once and cached
// on disk with the corpus's token ids, keyed by the text and the options.
//
// LibTorch-free, and kept out of any binary that loads LibTorch: Debian's
// libsentencepiece carries its own protobuf-lite and exports its symbols,
// which clash with the libprotobuf LibTorch links (the process crashes
// while loading). The trainer runs `megabatch-tokenize` (tokenize_main.cc)
// instead and reads the cached ids (tokenize_client.h).
#ifndef MEGABATCH_WORKER_TRAINER_DATA_TOKENIZER_H_
#define MEGABATCH_WORKER_TRAINER_DATA_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace megabatch::trainer {

class Tokenizer {
 public:
  // Token ids below kFirstOrdinaryId are special: 0 <unk>, 1 <s> (unused),
  // 2 </s> (ends each document), 3 [MASK]. Unknown characters fall back to
  // their UTF-8 bytes, so every text round-trips.
  static constexpr int kUnknownId = 0;
  static constexpr int kSeparatorId = 2;
  static constexpr int kMaskId = 3;
  static constexpr int kFirstOrdinaryId = 4;

  // Trains a `vocab_size` unigram model on `documents` (one sentence per
  // line). INVALID_ARGUMENT when the text cannot fill the vocabulary.
  static Result<std::unique_ptr<Tokenizer>> Train(
      const std::vector<std::string>& documents, int vocab_size, int threads);
  // Reads a serialized model. DATA_LOSS when it is not one of ours.
  static Result<std::unique_ptr<Tokenizer>> FromModel(
      const std::string& model, const std::string& origin);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  std::vector<int> Encode(const std::string& text) const;
  std::string Decode(const std::vector<int>& ids) const;
  int vocab_size() const;
  // The serialized model.
  const std::string& model() const { return model_; }

 private:
  Tokenizer(std::unique_ptr<sentencepiece::SentencePieceProcessor> processor,
            std::string model);
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::string model_;
};

// A corpus tokenized for tiny_bert: every document's ids followed by the
// separator, training and validation documents apart.
struct TokenizedCorpus {
  std::string model_path;  // the cached SentencePiece model
  std::string train_path;  // the cached ids, int32 little-endian
  std::string validation_path;
  int vocab_size = 0;
};

struct TokenizeOptions {
  std::string corpus_path;
  double validation_fraction = 0.05;
  int vocab_size = 2048;
  std::string cache_dir;
  int threads = 1;
};

// Loads the corpus and returns its cached tokenization, making it first
// (model, then ids) when absent. The cache key is a hash of the split
// documents and the options, so a changed corpus gets a new tokenizer. Files
// appear atomically and one process makes them while others wait on a lock.
// Errors: those of LoadTextCorpus and Tokenizer::Train, INTERNAL for a
// cache that cannot be written.
Result<TokenizedCorpus> TokenizeCorpus(const TokenizeOptions& options);

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_DATA_TOKENIZER_H_
