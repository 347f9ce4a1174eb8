// The model store: uploads kept by their SHA-256, once; over-large, empty
// and abandoned uploads leave nothing; a directory others may write is
// refused.
#include "server/store/model_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::store {
namespace {

std::vector<std::string> Files(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(ModelStoreTest, BytesAreStoredOnceUnderTheirHash) {
  testing::TempDir dir;
  const std::string root = dir.File("models");
  ASSERT_OK_AND_ASSIGN(auto store, ModelStore::Open(root, 1 << 20));
  const std::string bytes(300000, 'm');
  for (bool existed : {false, true}) {
    ASSERT_OK_AND_ASSIGN(auto upload, store->Begin());
    ASSERT_OK(upload->Append(std::string_view(bytes).substr(0, 1000)));
    ASSERT_OK(upload->Append(std::string_view(bytes).substr(1000)));
    ASSERT_OK_AND_ASSIGN(ModelStore::Stored stored, upload->Commit());
    EXPECT_EQ(stored.sha256, Sha256Hex(bytes));
    EXPECT_EQ(stored.bytes, 300000);
    EXPECT_EQ(stored.existed, existed);
  }
  EXPECT_EQ(Files(root), std::vector<std::string>{Sha256Hex(bytes) + ".pt"});
  EXPECT_TRUE(store->Has(Sha256Hex(bytes)));
  EXPECT_EQ(store->SizeOf(Sha256Hex(bytes)), 300000);
  EXPECT_FALSE(store->Has(Sha256Hex("other")));
  EXPECT_FALSE(store->Has("../" + Sha256Hex(bytes)));  // not a hash
  struct stat st;
  ASSERT_EQ(::stat(root.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(ModelStoreTest, OverLargeEmptyAndAbandonedUploadsLeaveNothing) {
  testing::TempDir dir;
  const std::string root = dir.File("models");
  ASSERT_OK_AND_ASSIGN(auto store, ModelStore::Open(root, 1000));
  {
    ASSERT_OK_AND_ASSIGN(auto upload, store->Begin());
    ASSERT_OK(upload->Append(std::string(600, 'a')));
    Status over = upload->Append(std::string(600, 'a'));
    EXPECT_EQ(over.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(over.message().find("--max-model-bytes"), std::string::npos);
  }
  {
    ASSERT_OK_AND_ASSIGN(auto upload, store->Begin());
    EXPECT_EQ(upload->Commit().status().code(), StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(Files(root).empty());
  // A crash's leftover is removed when the store opens again.
  std::ofstream(root + "/upload-abc123") << "half a model";
  ASSERT_OK(ModelStore::Open(root, 1000));
  EXPECT_TRUE(Files(root).empty());
}

TEST(ModelStoreTest, ADirectoryOthersMayWriteIsRefused) {
  testing::TempDir dir;
  const std::string root = dir.File("shared");
  std::filesystem::create_directories(root);
  ::chmod(root.c_str(), 0777);
  auto store = ModelStore::Open(root, 1000);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("writable by others"),
            std::string::npos);
}

}  // namespace
}  // namespace megabatch::store
