// A plain-text corpus, split into training and validation documents
// deterministically. LibTorch-free.
//
// The default is Debian's `fortunes` package (/usr/share/games/fortunes):
// ~15,000 quotations, jokes and passages of English prose, 2.5 MB of text in
// plain files, under a free licence, installed by scripts/install_deps.sh.
// Users bring their own text with dataset.path: a file or a directory.
#ifndef MEGABATCH_WORKER_TRAINER_DATA_TEXT_CORPUS_H_
#define MEGABATCH_WORKER_TRAINER_DATA_TEXT_CORPUS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/datasets.h"
#include "common/status.h"

namespace megabatch::trainer {

struct TextCorpus {
  std::vector<std::string> train;       // documents, in corpus order
  std::vector<std::string> validation;  // documents, in corpus order
  std::vector<std::string> files;       // the files read, in order
};

// Reads `path`: a file, or every regular file of a directory in name order
// (symbolic links and files holding a NUL byte, such as fortune's .dat
// indexes, are skipped). A file with a line holding only "%" (the fortune
// format) has documents separated by such lines; any other file has
// documents separated by blank lines. Documents lose their trailing
// whitespace; empty ones are dropped. A document goes to validation when
// its FNV-1a hash falls in the first `validation_fraction` of the 64-bit
// range (InValidation), so the split depends only on the document's text:
// the same on every machine, and stable when documents are added or reordered.
// Errors: NOT_FOUND for a missing path, INVALID_ARGUMENT for a corpus with no
// training or no validation document.
Result<TextCorpus> LoadTextCorpus(const std::string& path,
                                  double validation_fraction);

// FNV-1a, 64-bit.
uint64_t Fnv1a64(std::string_view bytes,
                 uint64_t hash = 14695981039346656037ull);
bool InValidation(std::string_view document, double validation_fraction);

// The documents joined into one character stream, each followed by a blank
// line (the char_lstm training and validation text).
std::string JoinDocuments(const std::vector<std::string>& documents);

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_DATA_TEXT_CORPUS_H_
