// Internals of the merge shared by its readers (multiprocess files, Redis):
// interned names and label sets, and the series cache that keeps parsed keys
// between scrapes. Not part of the core's interface.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gpe/series_key.hpp"
#include "gpe/strings.hpp"

namespace gpe {

using LabelViews = std::vector<std::pair<std::string_view, std::string_view>>;

// `labels` as views, and `labels` without those named `name`.
LabelViews label_views(const Labels& labels);
LabelViews without_label(const LabelViews& labels, std::string_view name);

// Interned label sets: labels in prometheus_client's tuple order (which is
// what identifies a series) plus their rendering, computed once.
class LabelSets {
  public:
    uint32_t intern(const LabelViews& labels);
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

}  // namespace gpe
