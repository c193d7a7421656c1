// Graph: a model as an ordered list of nodes, each with a hand-written forward and backward.
// forward() runs the list in order, backward() in reverse; there is no autograd and no allocation:
// every buffer a node touches was planned in an arena when the model was built, and nodes read the
// current batch shape from the model when they run. Each node runs inside a profiler range named
// after it ("layer.3.attention"), so an Nsight Systems timeline reads like the model.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace engine {

class Graph {
 public:
  using Fn = std::function<void()>;
  struct Node {
    std::string name;
    Fn forward;
    Fn backward;  // may be empty: nothing to propagate (e.g. a node that only feeds the loss)
  };

  explicit Graph(Backend& backend) : backend_(backend) {}

  void add(std::string name, Fn forward, Fn backward) {
    nodes_.push_back(Node{std::move(name), std::move(forward), std::move(backward)});
  }

  // Runs nodes [0, end) forward; end = -1 means all (inference can stop before the loss).
  void forward(int end = -1) {
    int n = end < 0 ? int(nodes_.size()) : end;
    for (int i = 0; i < n; ++i) run(nodes_[i].name, nodes_[i].forward, "");
  }
  void backward() {
    for (int i = int(nodes_.size()) - 1; i >= 0; --i) {
      if (nodes_[i].backward) run(nodes_[i].name, nodes_[i].backward, ".backward");
      if (after_backward_) after_backward_(nodes_[i].name);
    }
  }
  // Called with each node's name once its backward has been queued (the data-parallel gradient
  // buckets start there, engine/dist/grad_sync.h); empty: nothing is called.
  void set_after_backward(std::function<void(const std::string& node)> f) { after_backward_ = std::move(f); }

  const std::vector<Node>& nodes() const { return nodes_; }
  // Index of the first node whose name is `name` (for forward(end)).
  int index_of(const std::string& name) const {
    for (size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].name == name) return int(i);
    return -1;
  }

 private:
  void run(const std::string& name, const Fn& fn, const char* suffix) {
    std::string label = name + suffix;
    backend_.range_push(label.c_str());
    fn();
    backend_.range_pop();
  }

  Backend& backend_;
  std::vector<Node> nodes_;
  std::function<void(const std::string&)> after_backward_;
};

}  // namespace engine
