// The text corpus (split determinism) and the SentencePiece tokenizer
// (round trip, cache), on Debian's fortunes and on corpora written here. No
// LibTorch in this binary (see worker/trainer/data/tokenizer.h).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "worker/trainer/data/text_corpus.h"
#include "worker/trainer/data/tokenizer.h"

namespace megabatch::trainer {
namespace {

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string Documents(int first, int count, const char* separator) {
  std::string text;
  for (int i = first; i < first + count; ++i) {
    text += "Document number " + std::to_string(i) +
            " says something.\nA second line.\n";
    text += separator;
  }
  return text;
}

TEST(TextCorpus, FortunesSplitIsDeterministicAndHoldsOutTheAskedFraction) {
  auto a = LoadTextCorpus(kDefaultTextCorpusPath, 0.05);
  ASSERT_OK(a);
  auto b = LoadTextCorpus(kDefaultTextCorpusPath, 0.05);
  ASSERT_OK(b);
  EXPECT_EQ(a->train, b->train);
  EXPECT_EQ(a->validation, b->validation);
  const double total =
      static_cast<double>(a->train.size() + a->validation.size());
  EXPECT_GT(total, 10000);  // ~15,000 fortunes
  EXPECT_NEAR(a->validation.size() / total, 0.05, 0.01);
  // Binary index files (.dat) and the .u8 links are not read.
  for (const auto& f : a->files) {
    EXPECT_EQ(f.find(".dat"), std::string::npos) << f;
    EXPECT_EQ(f.find(".u8"), std::string::npos) << f;
  }
  // No document is in both splits.
  std::set<std::string> train(a->train.begin(), a->train.end());
  for (const auto& d : a->validation) EXPECT_EQ(train.count(d), 0u);
  // A larger fraction only moves documents into validation.
  auto c = LoadTextCorpus(kDefaultTextCorpusPath, 0.2);
  ASSERT_OK(c);
  std::set<std::string> wide(c->validation.begin(), c->validation.end());
  for (const auto& d : a->validation) EXPECT_EQ(wide.count(d), 1u);
}

TEST(TextCorpus, SplitDependsOnTheDocumentNotItsPlace) {
  testing::TempDir dir;
  Write(dir.File("a.txt"), Documents(0, 300, "\n"));  // blank-line format
  Write(dir.File("b.txt"),
        "%\n" + Documents(300, 300, "%\n"));  // fortune format
  auto first = LoadTextCorpus(dir.path().string(), 0.3);
  ASSERT_OK(first);
  EXPECT_EQ(first->train.size() + first->validation.size(), 600u);
  for (const auto& d : first->train) {
    EXPECT_EQ(d.find("Document number"), 0u);
    EXPECT_EQ(d.back(), '.');  // trailing newline trimmed
  }
  // Reordered files, more documents and a binary file: every old document
  // stays on its side.
  Write(dir.File("0.txt"), Documents(600, 100, "\n"));
  Write(dir.File("a.txt"), Documents(0, 300, "\n") + Documents(700, 50, "\n"));
  Write(dir.File("index.dat"), std::string("\0\1\2binary", 9));
  auto second = LoadTextCorpus(dir.path().string(), 0.3);
  ASSERT_OK(second);
  EXPECT_EQ(second->files.size(), 3u);
  std::set<std::string> val(second->validation.begin(),
                            second->validation.end());
  for (const auto& d : first->validation) EXPECT_EQ(val.count(d), 1u) << d;
  for (const auto& d : first->train) EXPECT_EQ(val.count(d), 0u) << d;
  // One file works as well as a directory.
  auto one = LoadTextCorpus(dir.File("b.txt"), 0.3);
  ASSERT_OK(one);
  EXPECT_EQ(one->train.size() + one->validation.size(), 300u);
}

TEST(TextCorpus, ErrorsNameThePath) {
  auto missing = LoadTextCorpus("/nonexistent/corpus", 0.05);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/corpus"),
            std::string::npos);
  testing::TempDir dir;
  Write(dir.File("one.txt"), "just one document\n");
  auto tiny = LoadTextCorpus(dir.File("one.txt"), 0.05);
  EXPECT_EQ(tiny.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(tiny.status().message().find("validation"), std::string::npos);
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cache_ = new testing::TempDir();
    TokenizeOptions options{kDefaultTextCorpusPath, 0.05, 1024,
                            cache_->path().string(), 2};
    auto start = std::chrono::steady_clock::now();
    auto made = TokenizeCorpus(options);
    ASSERT_OK(made);
    first_seconds_ =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    corpus_ = new TokenizedCorpus(*made);
  }
  static void TearDownTestSuite() {
    delete corpus_;
    delete cache_;
  }
  static std::unique_ptr<Tokenizer> Load() {
    std::ifstream in(corpus_->model_path, std::ios::binary);
    std::string model((std::istreambuf_iterator<char>(in)),
                      std::istreambuf_iterator<char>());
    auto t = Tokenizer::FromModel(model, corpus_->model_path);
    EXPECT_OK(t);
    return std::move(*t);
  }
  static testing::TempDir* cache_;
  static TokenizedCorpus* corpus_;
  static double first_seconds_;
};
testing::TempDir* TokenizerTest::cache_ = nullptr;
TokenizedCorpus* TokenizerTest::corpus_ = nullptr;
double TokenizerTest::first_seconds_ = 0;

TEST_F(TokenizerTest, RoundTripsValidationTextAndAnyCharacter) {
  auto tokenizer = Load();
  EXPECT_EQ(tokenizer->vocab_size(), 1024);
  auto corpus = LoadTextCorpus(kDefaultTextCorpusPath, 0.05);
  ASSERT_OK(corpus);
  size_t tokens = 0, chars = 0;
  // Documents the tokenizer never saw, newlines and all.
  for (const auto& d : corpus->validation) {
    std::vector<int> ids = tokenizer->Encode(d);
    ASSERT_EQ(tokenizer->Decode(ids), d);
    for (int id : ids) {
      ASSERT_GE(id, Tokenizer::kFirstOrdinaryId - 1);  // [MASK] is a piece too
      ASSERT_LT(id, 1024);
    }
    tokens += ids.size();
    chars += d.size();
  }
  // Pieces are longer than a character on average.
  EXPECT_GT(static_cast<double>(chars) / tokens, 2.0);
  for (std::string text : {"naïve café — 東京\n\ttab  two spaces",
                           "\x01\x7f control", "[MASK] is text here"}) {
    EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(text)), text);
  }
}

TEST_F(TokenizerTest, CachedIdsAreTheEncodedDocumentsAndAreReused) {
  auto tokenizer = Load();
  auto corpus = LoadTextCorpus(kDefaultTextCorpusPath, 0.05);
  ASSERT_OK(corpus);
  std::ifstream in(corpus_->validation_path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  std::vector<int32_t> ids(bytes.size() / 4);
  std::memcpy(ids.data(), bytes.data(), ids.size() * 4);
  std::vector<int32_t> expected;
  for (const auto& d : corpus->validation) {
    for (int id : tokenizer->Encode(d)) expected.push_back(id);
    expected.push_back(Tokenizer::kSeparatorId);
  }
  EXPECT_EQ(ids, expected);

  // A second call finds everything cached: same files, untouched, and fast.
  auto mtime = std::filesystem::last_write_time(corpus_->model_path);
  auto start = std::chrono::steady_clock::now();
  auto again = TokenizeCorpus(
      {kDefaultTextCorpusPath, 0.05, 1024, cache_->path().string(), 2});
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  ASSERT_OK(again);
  EXPECT_EQ(again->model_path, corpus_->model_path);
  EXPECT_EQ(std::filesystem::last_write_time(corpus_->model_path), mtime);
  EXPECT_LT(seconds, first_seconds_);
  // Another vocabulary or split is another tokenizer.
  auto other = TokenizeCorpus(
      {kDefaultTextCorpusPath, 0.1, 1024, cache_->path().string(), 2});
  ASSERT_OK(other);
  EXPECT_NE(other->model_path, corpus_->model_path);
}

TEST_F(TokenizerTest, AVocabularyTheTextCannotFillIsAnError) {
  testing::TempDir dir;
  Write(dir.File("small.txt"), Documents(0, 40, "\n"));
  auto r =
      TokenizeCorpus({dir.File("small.txt"), 0.2, 50000, dir.File("cache"), 1});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("model.vocab_size"), std::string::npos)
      << r.status().message();
}

}  // namespace
}  // namespace megabatch::trainer
