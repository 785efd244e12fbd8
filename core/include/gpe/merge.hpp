// Merging the samples of many processes exactly as prometheus_client's
// MultiProcessCollector does (prometheus_client/multiprocess.py), whatever
// the storage they come from (multiprocess files, Redis).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gpe/series_key.hpp"
#include "gpe/store_kind.hpp"
#include "gpe/strings.hpp"

namespace gpe {

// Problems that did not stop the operation (a skipped file, ...).
struct Diagnostics {
    std::vector<std::string> warnings;
    void warn(std::string_view message) { warnings.push_back(valid_utf8(message)); }
};

struct MergedSample {
    uint32_t name;    // id in MergeResult::names
    uint32_t labels;  // id in MergeResult::label_sets
    double value;
};

struct MergedFamily {
    std::string name;
    std::string help;
    MetricType type;
    std::vector<MergedSample> samples;
};

// Interned label sets: labels in prometheus_client's tuple order (which is
// what identifies a series) plus their rendering, computed once.
class LabelSets {
  public:
    uint32_t intern(const std::vector<std::pair<std::string_view, std::string_view>>& labels);
    void clear();
    const Labels& labels(uint32_t id) const { return sets_[id].labels; }
    // `{a="x",b="y"}` sorted by name (a repeated name shows its last value),
    // or "" without labels; the same in both exposition formats.
    const std::string& rendered(uint32_t id);
    size_t size() const { return sets_.size(); }

  private:
    struct Set {
        Labels labels;
        std::string rendered;
        bool has_rendered = false;
    };
    std::vector<Set> sets_;
    StringMap<uint32_t> index_;
    std::string scratch_;
};

class Names {
  public:
    uint32_t intern(std::string_view name);
    const std::string& operator[](uint32_t id) const { return names_[id]; }
    void clear();

  private:
    std::vector<std::string> names_;
    StringMap<uint32_t> index_;
};

using LabelViews = std::vector<std::pair<std::string_view, std::string_view>>;

// What a reader keeps between merges: parsed series keys and interned names
// and label sets (with their renderings), so that a steady-state scrape
// parses, interns and renders nothing twice. Not thread-safe.
class SeriesCache {
  public:
    struct Key {
        std::string_view json;  // the series key as stored (owned by the cache)
        SeriesKey key;
        std::optional<double> le;  // the first `le` label as a number, if it is one
        bool has_le = false;
        uint32_t name_id = 0;         // sample name
        uint32_t labels_id = 0;       // sorted labels
        uint32_t without_pid_id = 0;  // ... without `pid` (aggregated gauges)
        uint32_t without_le_id = 0;   // ... without `le` (histogram buckets)
        uint64_t epoch = 0;           // merge in which `family` is valid
        uint32_t family = 0;
    };

    SeriesCache();
    ~SeriesCache();
    SeriesCache(const SeriesCache&) = delete;
    SeriesCache& operator=(const SeriesCache&) = delete;

    // Throws std::invalid_argument when `json` is not a series key.
    Key* lookup(std::string_view json);
    // The labels of `key` plus ("pid", pid), as a gauge file's sample has them.
    uint32_t labels_with_pid(const Key& key, std::string_view pid);

    // Forgets everything when far more is cached than the last merge used
    // (series of processes long gone); bumps generation() if so.
    void trim(size_t series_in_use);
    uint64_t generation() const { return generation_; }

    Names names;
    LabelSets label_sets;

  private:
    StringMap<std::unique_ptr<Key>> keys_;
    uint64_t generation_ = 0;
};

inline constexpr uint32_t kNoLabels = UINT32_MAX;

// One stored sample with its key resolved.
struct SourceSample {
    SeriesCache::Key* key;
    uint32_t pid_labels;  // labels_with_pid() for gauge stores, else kNoLabels
    double value;
    double timestamp;
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

    Diagnostics& diagnostics();

    // The merged metrics; `accumulate` makes histogram buckets cumulative
    // and adds _count (prometheus_client's merge(accumulate=True)).
    MergeResult finish(bool accumulate);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gpe
