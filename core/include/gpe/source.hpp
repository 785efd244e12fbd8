// Where merged metrics come from - a multiprocess directory or Redis - behind
// one interface, so that collecting, rendering and handing over the warnings
// is written once for the agent and the bindings alike.
#pragma once

#include <string>
#include <utility>

#include "gpe/exposition.hpp"
#include "gpe/merge.hpp"
#include "gpe/multiprocess.hpp"

namespace gpe {

class Source {
  public:
    virtual ~Source() = default;

    // The merged metrics, with the lock of the reader whose caches they
    // point into; `accumulate` as prometheus_client's merge(accumulate).
    virtual Collected collect(bool accumulate = true) = 0;

    // collect() rendered in `format`; its warnings are moved to `diagnostics`.
    std::string render(Format format, Diagnostics& diagnostics);
};

// All *.db files of one directory, read by a (long-lived, shared) reader.
class DirectorySource final : public Source {
  public:
    DirectorySource(MultiprocessReader& reader, std::string directory)
        : reader_(reader), directory_(std::move(directory)) {}

    Collected collect(bool accumulate = true) override {
        return reader_.collect_directory(directory_, accumulate);
    }

  private:
    MultiprocessReader& reader_;
    std::string directory_;
};

}  // namespace gpe
