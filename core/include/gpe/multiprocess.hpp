// Reading and merging a multiprocess directory exactly as prometheus_client's
// MultiProcessCollector does (prometheus_client/multiprocess.py), without
// creating any Python object.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gpe/series_key.hpp"
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
    std::string type;  // counter, gauge, histogram, summary
    std::vector<MergedSample> samples;
};

// Interned label sets: labels in prometheus_client's tuple order (which is
// what identifies a series) plus their rendering, computed once.
class LabelSets {
  public:
    uint32_t intern(const std::vector<std::pair<std::string_view, std::string_view>>& labels);
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

  private:
    std::vector<std::string> names_;
    StringMap<uint32_t> index_;
};

struct MergeResult {
    std::vector<MergedFamily> families;
    Names names;
    LabelSets label_sets;
    Diagnostics diagnostics;
};

// The *.db files of a directory in directory order (as glob.glob lists
// them), dot files excluded. Throws std::system_error if it is unreadable.
std::vector<std::string> list_db_files(const std::string& directory);

// Merges multiprocess files. Keeps parsed series keys between calls, so a
// long-lived reader (the agent, a registered collector) parses each key once.
class MultiprocessReader {
  public:
    MultiprocessReader();
    ~MultiprocessReader();
    MultiprocessReader(const MultiprocessReader&) = delete;
    MultiprocessReader& operator=(const MultiprocessReader&) = delete;

    // All *.db files of `directory`, under a shared lock against
    // mark_process_dead so that a dead process is never counted twice.
    MergeResult collect_directory(const std::string& directory, bool accumulate = true);

    // prometheus_client's MultiProcessCollector.merge(files, accumulate).
    MergeResult merge_files(const std::vector<std::string>& paths, bool accumulate = true);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Where the shared/exclusive lock between readers and mark_process_dead lives.
std::string lock_file_path(const std::string& directory);

}  // namespace gpe
