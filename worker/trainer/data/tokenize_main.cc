// megabatch-tokenize --corpus PATH --vocab-size V --validation-fraction F
//                    --cache-dir DIR [--threads N]
// Makes (or finds) the cached SentencePiece tokenization of a corpus and
// prints one JSON line: {"model": ..., "train": ..., "validation": ...,
// "vocab_size": V}; on failure {"code": C, "message": ...} (C a gRPC code)
// and exit code 1. megabatch-trainer runs it for tiny_bert trials: it links
// libsentencepiece, which cannot share a process with LibTorch (tokenizer.h).
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "worker/trainer/data/text_corpus.h"
#include "worker/trainer/data/tokenizer.h"

int main(int argc, char** argv) {
  megabatch::trainer::TokenizeOptions options;
  options.cache_dir = megabatch::DefaultCacheDir();
  auto fail = [](megabatch::StatusCode code, const std::string& message) {
    std::cout << nlohmann::json{{"code", static_cast<int>(code)},
                                {"message", message}}
                     .dump()
              << std::endl;
    return 1;
  };
  try {
    for (int i = 1; i < argc; ++i) {
      std::string flag = argv[i];
      if (i + 1 >= argc)
        return fail(megabatch::StatusCode::kInvalidArgument,
                    flag + " needs a value");
      std::string value = argv[++i];
      if (flag == "--corpus") {
        options.corpus_path = value;
      } else if (flag == "--vocab-size") {
        options.vocab_size = std::stoi(value);
      } else if (flag == "--validation-fraction") {
        options.validation_fraction = std::stod(value);
      } else if (flag == "--cache-dir") {
        options.cache_dir = value;
      } else if (flag == "--threads") {
        options.threads = std::stoi(value);
      } else {
        return fail(megabatch::StatusCode::kInvalidArgument,
                    "unknown flag " + flag);
      }
    }
    auto result = megabatch::trainer::TokenizeCorpus(options);
    if (!result.ok())
      return fail(result.status().code(), result.status().message());
    std::cout << nlohmann::json{{"model", result->model_path},
                                {"train", result->train_path},
                                {"validation", result->validation_path},
                                {"vocab_size", result->vocab_size}}
                     .dump()
              << std::endl;
    return 0;
  } catch (const std::exception& e) {
    return fail(megabatch::StatusCode::kInvalidArgument, e.what());
  }
}
