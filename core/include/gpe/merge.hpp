// Merging the samples of many processes exactly as prometheus_client's
// MultiProcessCollector does (prometheus_client/multiprocess.py), whatever
// the storage they come from (multiprocess files, Redis).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "gpe/detail/series_cache.hpp"
#include "gpe/diagnostics.hpp"
#include "gpe/exemplar.hpp"
#include "gpe/series_key.hpp"
#include "gpe/store_kind.hpp"

namespace gpe {

struct MergedSample {
    uint32_t name;    // id in MergeResult::names
    uint32_t labels;  // id in MergeResult::label_sets
    double value;
    int32_t exemplar;  // index in MergedFamily::exemplars, or -1
};

// The most recent exemplar of a sample across processes.
struct MergedExemplar {
    std::string labels;  // ExemplarLabels::encoded()
    double value;
    double timestamp;  // NaN: none
};

struct MergedFamily {
    std::string name;
    std::string help;
    MetricType type;
    std::vector<MergedSample> samples;
    std::vector<MergedExemplar> exemplars;
};

// An exemplar of one process's value (an exemplar file's record).
struct SourceExemplar {
    SeriesCache::Key* key;
    ExemplarValue exemplar;
};

struct MergeResult {
    std::vector<MergedFamily> families;
    // Owned by the SeriesCache; valid until its next merge.
    const Names* names = nullptr;
    LabelSets* label_sets = nullptr;
    Diagnostics diagnostics;
};

// A merge result and the lock of the reader whose caches it points into.
struct Collected {
    std::unique_lock<std::mutex> lock;
    MergeResult result;
};

// Collects the samples of one merge, store by store, then merges them.
class Merger {
  public:
    explicit Merger(SeriesCache& cache);
    ~Merger();
    Merger(const Merger&) = delete;
    Merger& operator=(const Merger&) = delete;

    // The samples of one process's store, as in a file named {type}_{pid}.db
    // or gauge_{mode}_{pid}.db.
    void add_source(Store store, const std::vector<SourceSample>& samples, std::string_view origin);

    // Exemplars of the values of any store added (before or after them):
    // counters' _total samples and histogram buckets keep the most recent
    // one of each sample; others are ignored, as prometheus_client has none.
    void add_exemplars(std::vector<SourceExemplar> exemplars);

    Diagnostics& diagnostics();

    // The merged metrics; `accumulate` makes histogram buckets cumulative
    // and adds _count (prometheus_client's merge(accumulate=True)).
    MergeResult finish(bool accumulate);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gpe
