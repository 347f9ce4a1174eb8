#include "worker/trainer/data/text_corpus.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "worker/trainer/data/files.h"

namespace megabatch::trainer {
namespace {

namespace fs = std::filesystem;

void AddDocument(std::string doc, double validation_fraction,
                 TextCorpus* corpus) {
  while (!doc.empty() && std::isspace(static_cast<unsigned char>(doc.back()))) {
    doc.pop_back();
  }
  size_t start = 0;
  while (start < doc.size() && (doc[start] == '\n' || doc[start] == '\r'))
    ++start;
  doc.erase(0, start);
  if (doc.empty()) return;
  (InValidation(doc, validation_fraction) ? corpus->validation : corpus->train)
      .push_back(std::move(doc));
}

// Splits one file's text into documents.
void SplitDocuments(const std::string& text, double validation_fraction,
                    TextCorpus* corpus) {
  const bool fortune_format =
      text.rfind("\n%\n") != std::string::npos || text.rfind("%\n", 0) == 0;
  std::string doc;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    bool separator = fortune_format
                         ? line == "%"
                         : line.find_first_not_of(" \t") == std::string::npos;
    if (separator) {
      AddDocument(std::move(doc), validation_fraction, corpus);
      doc.clear();
      continue;
    }
    doc += line;
    doc += '\n';
  }
  AddDocument(std::move(doc), validation_fraction, corpus);
}

}  // namespace

uint64_t Fnv1a64(std::string_view bytes, uint64_t hash) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

bool InValidation(std::string_view document, double validation_fraction) {
  // The top 53 bits of the hash as a fraction in [0, 1).
  double u = static_cast<double>(Fnv1a64(document) >> 11) * 0x1.0p-53;
  return u < validation_fraction;
}

Result<TextCorpus> LoadTextCorpus(const std::string& path,
                                  double validation_fraction) {
  std::error_code ec;
  fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    return NotFoundError("dataset.path: no such file or directory: " + path);
  }
  std::vector<fs::path> files;
  if (fs::is_directory(status)) {
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      if (entry.is_symlink() || !entry.is_regular_file()) continue;
      files.push_back(entry.path());
    }
    if (ec)
      return NotFoundError("dataset.path: cannot list " + path + ": " +
                           ec.message());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  TextCorpus corpus;
  for (const auto& file : files) {
    auto text = ReadFileBytes(file.string(), "dataset.path:");
    if (!text.ok()) return text.status();
    if (text->find('\0') != std::string::npos) continue;  // binary
    SplitDocuments(*text, validation_fraction, &corpus);
    corpus.files.push_back(file.string());
  }
  if (corpus.train.empty() || corpus.validation.empty()) {
    return InvalidArgumentError(
        "dataset.path: " + path + " gives " +
        std::to_string(corpus.train.size()) + " training and " +
        std::to_string(corpus.validation.size()) +
        " validation documents; both must be non-empty (more text, or another "
        "dataset.validation_fraction)");
  }
  return corpus;
}

std::string JoinDocuments(const std::vector<std::string>& documents) {
  size_t size = 0;
  for (const auto& d : documents) size += d.size() + 2;
  std::string out;
  out.reserve(size);
  for (const auto& d : documents) {
    out += d;
    out += "\n\n";
  }
  return out;
}

}  // namespace megabatch::trainer
