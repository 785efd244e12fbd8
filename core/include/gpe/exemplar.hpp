// Exemplars in multiprocess mode: the latest exemplar of each counter and
// histogram bucket of a process, in a side file of the multiprocess directory
// (exemplars_{identity}.db, exemplars_archive.db for dead processes).
//
// prometheus_client's readers must not see anything in it, so the file starts
// with the 8-byte header of an empty prometheus_client file ("8 bytes used");
// our own header and the records follow:
//
//   [u32 8][u32 0]  [u32 magic][u32 version][u64 end]  then records, each:
//   [u32 key_len][u32 capacity][key, zero-padded to 8][u64 sequence]
//   [f64 value][f64 timestamp][u32 labels_len][u32 capacity][labels: capacity bytes]
//
// key: "{file prefix} {series key}" (the value's file and JSON key). Labels
// are encoded as ExemplarLabels::encoded(). A record is written under a
// sequence lock (odd while being written), so that a reader in another
// process never takes a half-written exemplar. Records are only appended;
// when a key's labels outgrow its record a bigger one is appended, and the
// last record of a key in a file is its exemplar.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gpe/file_descriptor.hpp"
#include "gpe/mmap_file.hpp"
#include "gpe/strings.hpp"

namespace gpe {

// prometheus_client's limit on an exemplar's label names and values together.
inline constexpr size_t kMaxExemplarRunes = 128;
inline constexpr std::string_view kExemplarFilePrefix = "exemplars";

// Whether a file name (with or without directory) is an exemplar file.
bool is_exemplar_file(std::string_view path);

// An exemplar's label set, checked and encoded once (the request path keeps
// one per request and hands it to every value it updates).
class ExemplarLabels {
  public:
    using LabelView = std::pair<std::string_view, std::string_view>;

    ExemplarLabels() = default;
    // Sorted by name; a repeated name keeps its last value (a dict). Throws
    // std::invalid_argument, as prometheus_client raises ValueError, for an
    // empty or reserved (`__`) name, text that is not UTF-8, and more than
    // 128 code points in names and values together.
    explicit ExemplarLabels(std::span<const LabelView> labels);
    explicit ExemplarLabels(const std::vector<std::pair<std::string, std::string>>& labels);

    // [u16 name length][name][u16 value length][value]... sorted by name.
    const std::string& encoded() const { return encoded_; }
    bool empty() const { return encoded_.empty(); }

    // The pairs of an encoding; std::invalid_argument if it is not one.
    static std::vector<std::pair<std::string, std::string>> decode(std::string_view encoded);
    // As prometheus_client's OpenMetrics exposition writes an exemplar's
    // labels: `{a="x",b="y"}`, names as they are, values escaped.
    static void render(std::string_view encoded, std::string& out);

  private:
    std::string encoded_;
};

// One exemplar as read back.
struct ExemplarValue {
    std::string labels;  // ExemplarLabels::encoded()
    double value = 0.0;
    double timestamp = 0.0;  // NaN: none (an Exemplar given without one)
};

// A record in a mapped exemplar file; stays valid as long as its file object.
class ExemplarSlot {
  public:
    explicit ExemplarSlot(char* record = nullptr) : record_(record) {}
    explicit operator bool() const { return record_ != nullptr; }
    char* record() const { return record_; }
    size_t capacity() const;
    // Stores an exemplar whose labels fit capacity(). False when another
    // thread is writing this record right now: its exemplar is as recent.
    bool store(std::string_view labels, double value, double timestamp) const;
    // The exemplar (nullopt if none was stored, or writes kept racing the read).
    std::optional<ExemplarValue> load() const;

  private:
    char* record_;
};

// The writer side of one exemplar file. Allocated before mapped as MmapFile
// (a full filesystem is an error, never SIGBUS). Not thread-safe: the owner
// serialises slot(); ExemplarSlot::store may run concurrently.
class ExemplarFile {
  public:
    // Opens or creates the file. std::system_error naming the path, or
    // FormatError when an existing file is not an exemplar file.
    explicit ExemplarFile(std::string path);

    // The record of `key` with room for `label_bytes`, appended if new or too small.
    ExemplarSlot slot(std::string_view key, size_t label_bytes);
    // The record of `key`, if any.
    ExemplarSlot find(std::string_view key) const;

    const std::string& path() const { return path_; }
    bool is_file_at_path() const;

  private:
    void grow_to(size_t min_capacity);
    char* base() const { return mappings_.back().data(); }

    std::string path_;
    FileDescriptor fd_;
    std::vector<Mapping> mappings_;
    size_t capacity_ = 0;
    size_t end_ = 0;
    StringMap<size_t> positions_;  // key -> offset of its latest record
};

// Calls fn(key, exemplar) for the latest record of each key of an exemplar
// file, read in place under the records' sequence locks. Throws
// std::system_error when the file cannot be read, FormatError when it is not
// an exemplar file or its records run past its end.
void read_exemplar_file(const std::string& path,
                        const std::function<void(std::string_view key, ExemplarValue&&)>& fn);

// "{prefix} {series key}": an exemplar record's key, and the reverse.
std::string exemplar_key(std::string_view prefix, std::string_view series_key);
std::pair<std::string_view, std::string_view> split_exemplar_key(std::string_view key);

// Folds the exemplars of `pid` into exemplars_archive.db (the most recent of
// each key wins) and deletes its file. False (the file kept) on an error,
// described in `error`.
bool archive_exemplars(const std::string& directory, std::string_view pid, std::string& error);

}  // namespace gpe
