// .npy files as numpy writes them map with their dtype, shape and bytes;
// every file a trainer cannot use is refused naming the spec field, the
// path and what was expected.
#include "worker/trainer/data/npy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::trainer {
namespace {

using ::testing::HasSubstr;

class NpyTest : public ::testing::Test {
 protected:
  // Writes arrays with Debian's python3-numpy: the files users will bring.
  void Numpy(const std::string& code) {
    const std::string script = dir_.File("make.py");
    std::ofstream(script) << "import numpy as np\nimport os\nd = '"
                          << dir_.path().string() << "'\n"
                          << code << "\n";
    ASSERT_EQ(std::system(("/usr/bin/python3 " + script).c_str()), 0);
  }
  void Write(const std::string& name, const std::string& bytes) {
    std::ofstream(dir_.File(name), std::ios::binary) << bytes;
  }
  // A version-1.0 file with `header` (padded as numpy pads it) and `data`.
  static std::string File(std::string header, const std::string& data) {
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::string out("\x93NUMPY\x01\x00", 8);
    out += static_cast<char>(header.size() & 0xff);
    out += static_cast<char>(header.size() >> 8);
    return out + header + data;
  }
  Status OpenError(const std::string& name) {
    auto a = NpyArray::Open(dir_.File(name), "dataset.train.x");
    return a.ok() ? Status() : a.status();
  }
  testing::TempDir dir_;
};

TEST_F(NpyTest, ArraysNumpyWritesMapWithTheirTypeShapeAndBytes) {
  Numpy(
      "np.save(os.path.join(d, 'x.npy'), np.arange(24, dtype=np.float32)"
      ".reshape(4, 2, 3))\n"
      "np.save(os.path.join(d, 'h.npy'), np.ones((5, 7), dtype=np.float16))\n"
      "np.save(os.path.join(d, 'u.npy'), np.arange(6, dtype=np.uint8))\n"
      "np.save(os.path.join(d, 'y.npy'), np.array([3, 1, 4], dtype=np.int64))\n"
      "np.save(os.path.join(d, 'y32.npy'), np.array([9, 2], dtype=np.int32))\n"
      "np.save(os.path.join(d, 'e.npy'), np.zeros((0, 5), dtype=np.float32))\n"
      "a = np.arange(70000, dtype=np.float32).reshape(10, 7000)\n"
      "np.lib.format.write_array(open(os.path.join(d, 'v2.npy'), 'wb'), a,"
      " version=(2, 0))");
  ASSERT_OK_AND_ASSIGN(NpyArray x, NpyArray::Open(dir_.File("x.npy"), "x"));
  EXPECT_EQ(x.type(), NpyType::kFloat32);
  EXPECT_EQ(x.shape(), (std::vector<int64_t>{4, 2, 3}));
  EXPECT_EQ(x.rows(), 4);
  EXPECT_EQ(x.row_elements(), 6);
  ASSERT_EQ(x.data_bytes(), 24 * sizeof(float));
  const float* xs = static_cast<const float*>(x.data());
  for (int i = 0; i < 24; ++i) EXPECT_EQ(xs[i], static_cast<float>(i));

  ASSERT_OK_AND_ASSIGN(NpyArray h, NpyArray::Open(dir_.File("h.npy"), "x"));
  EXPECT_EQ(h.type(), NpyType::kFloat16);
  EXPECT_EQ(h.data_bytes(), 5u * 7 * 2);
  ASSERT_OK_AND_ASSIGN(NpyArray u, NpyArray::Open(dir_.File("u.npy"), "x"));
  EXPECT_EQ(u.type(), NpyType::kUInt8);
  EXPECT_EQ(static_cast<const uint8_t*>(u.data())[5], 5);
  ASSERT_OK_AND_ASSIGN(NpyArray y, NpyArray::Open(dir_.File("y.npy"), "y"));
  EXPECT_EQ(y.type(), NpyType::kInt64);
  EXPECT_EQ(static_cast<const int64_t*>(y.data())[2], 4);
  ASSERT_OK_AND_ASSIGN(NpyArray y32, NpyArray::Open(dir_.File("y32.npy"), "y"));
  EXPECT_EQ(static_cast<const int32_t*>(y32.data())[0], 9);
  ASSERT_OK_AND_ASSIGN(NpyArray e, NpyArray::Open(dir_.File("e.npy"), "x"));
  EXPECT_EQ(e.rows(), 0);
  EXPECT_EQ(e.data_bytes(), 0u);
  ASSERT_OK_AND_ASSIGN(NpyArray v2, NpyArray::Open(dir_.File("v2.npy"), "x"));
  EXPECT_EQ(v2.shape(), (std::vector<int64_t>{10, 7000}));
  EXPECT_EQ(static_cast<const float*>(v2.data())[69999], 69999.0f);

  // A moved-from array gives its mapping to the new one.
  NpyArray moved = std::move(x);
  EXPECT_EQ(static_cast<const float*>(moved.data())[23], 23.0f);
}

TEST_F(NpyTest, FilesATrainerCannotUseAreRefusedSayingWhy) {
  Numpy(
      "np.save(os.path.join(d, 'f64.npy'), np.zeros(3))\n"
      "np.save(os.path.join(d, 'big.npy'), np.zeros(3, dtype='>f4'))\n"
      "np.save(os.path.join(d, 'fortran.npy'),"
      " np.asfortranarray(np.zeros((3, 2), dtype=np.float32)))\n"
      "np.save(os.path.join(d, 'obj.npy'), np.array(['a', 'b']))");
  const std::string four_floats(16, '\0');
  Write("short.npy",
        File("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }",
             four_floats));
  Write("long.npy",
        File("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
             four_floats));
  Write("huge.npy", File("{'descr': '<f4', 'fortran_order': False, 'shape': "
                         "(999999999999, 999999999999), }",
                         four_floats));
  Write("text.npy", "x,y\n1,2\n3,4\n");
  Write("tiny.npy", "\x93NUM");
  Write("noshape.npy", File("{'descr': '<f4', 'fortran_order': False}", ""));
  const std::pair<const char*, const char*> cases[] = {
      {"f64.npy", "dtype '<f8' cannot be used"},
      {"big.npy", "(big-endian)"},
      {"fortran.npy", "Fortran order"},
      {"obj.npy", "dtype '<U1' cannot be used"},
      {"short.npy",
       "holds 16 bytes of data; its shape (5,) of float32 needs 20"},
      {"long.npy",
       "holds 16 bytes of data; its shape (3,) of float32 needs 12"},
      {"huge.npy", "shape too large"},
      {"text.npy", "not a .npy file"},
      {"tiny.npy", "not a .npy file"},
      {"noshape.npy", "header has no 'shape'"},
  };
  for (const auto& [name, why] : cases) {
    SCOPED_TRACE(name);
    const Status s = OpenError(name);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("dataset.train.x: " + dir_.File(name)));
    EXPECT_THAT(s.message(), HasSubstr(why));
  }
  EXPECT_EQ(OpenError("missing.npy").code(), StatusCode::kNotFound);
  EXPECT_EQ(NpyArray::Open(dir_.path().string(), "x").status().code(),
            StatusCode::kInvalidArgument);  // a directory
}

}  // namespace
}  // namespace megabatch::trainer
