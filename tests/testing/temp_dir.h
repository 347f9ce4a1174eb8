// A directory under the system temp dir, removed with its contents on
// destruction. Thread-compatible.
#ifndef MEGABATCH_TESTS_TESTING_TEMP_DIR_H_
#define MEGABATCH_TESTS_TESTING_TEMP_DIR_H_

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace megabatch::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "megabatch-test-XXXXXX")
            .string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string File(const std::string& name) const {
    return (path_ / name).string();
  }

 private:
  std::filesystem::path path_;
};

}  // namespace megabatch::testing

#endif  // MEGABATCH_TESTS_TESTING_TEMP_DIR_H_
