// Fashion-MNIST classification with the mlp and cnn models.
#include "common/datasets.h"
#include "worker/trainer/models/models.h"
#include "worker/trainer/tasks/task.h"

namespace megabatch::trainer {
namespace {

namespace F = torch::nn::functional;

class ImageTask : public Task {
 public:
  // The last kFashionMnistValidationImages training images are the
  // validation split (views into the decoded tensors, not copies).
  ImageTask(const TrialConfig& config, ImageDataset data)
      : config_(config), data_(std::move(data)) {
    const int64_t n = data_.train_images.size(0);
    const int64_t held = std::min(kFashionMnistValidationImages, n / 2);
    SplitOff(n - held);
  }

  Result<std::shared_ptr<torch::nn::Module>> BuildModel() override {
    auto model = trainer::BuildModel(config_);
    if (!model.ok()) return model.status();
    model_ = *model;
    return std::shared_ptr<torch::nn::Module>(model_.ptr());
  }
  void To(torch::Device device) override {
    // Decoded once; on the GPU for a cuda trial (Fashion-MNIST is 220 MB).
    for (torch::Tensor* t :
         {&data_.train_images, &data_.train_labels, &val_images_, &val_labels_,
          &data_.test_images, &data_.test_labels}) {
      *t = t->to(device);
    }
  }
  int64_t train_size() const override { return data_.train_images.size(0); }

  torch::Tensor Loss(const torch::Tensor& samples,
                     int64_t /*offset*/) override {
    torch::Tensor x = data_.train_images.index_select(0, samples);
    torch::Tensor y = data_.train_labels.index_select(0, samples);
    return F::cross_entropy(model_->forward(x), y);
  }

  bool has_test_split() const override { return true; }

  Evaluation Evaluate(Split split) override {
    const bool test = split == Split::kTest;
    const torch::Tensor& images = test ? data_.test_images : val_images_;
    const torch::Tensor& labels = test ? data_.test_labels : val_labels_;
    int64_t n = images.size(0);
    double loss_sum = 0;
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i += kEvalSamples) {
      int64_t end = std::min(n, i + kEvalSamples);
      Score score = ScoreLogits(model_->forward(images.slice(0, i, end)),
                                labels.slice(0, i, end));
      loss_sum += score.loss_sum.item<double>();
      correct += score.hits.item<int64_t>();
    }
    return {loss_sum / n, static_cast<double>(correct) / n, {}};
  }

 private:
  // Rows [train, end) of the training file become the validation split.
  void SplitOff(int64_t train) {
    const int64_t n = data_.train_images.size(0);
    val_images_ = data_.train_images.narrow(0, train, n - train);
    val_labels_ = data_.train_labels.narrow(0, train, n - train);
    data_.train_images = data_.train_images.narrow(0, 0, train);
    data_.train_labels = data_.train_labels.narrow(0, 0, train);
  }

  const TrialConfig config_;
  ImageDataset data_;
  torch::Tensor val_images_, val_labels_;
  torch::nn::Sequential model_{nullptr};
};

}  // namespace

Score ScoreLogits(const torch::Tensor& logits, const torch::Tensor& targets) {
  return {F::cross_entropy(logits, targets,
                           F::CrossEntropyFuncOptions().reduction(torch::kSum)),
          logits.argmax(1).eq(targets).sum()};
}

std::unique_ptr<Task> MakeImageTask(const TrialConfig& config,
                                    const ImageDataset& data) {
  return std::make_unique<ImageTask>(config, data);
}

}  // namespace megabatch::trainer
