// prometheus_client's multiprocess file format (prometheus_client/mmap_dict.py):
//
//   [u32 used][4 bytes padding] then entries, each:
//   [i32 key_len][key utf-8][spaces to 8-byte alignment][f64 value][f64 timestamp]
//
// Files are created at 64 KiB and doubled when full. Our writer and reader are
// byte-compatible with it in both directions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "gpe/file_descriptor.hpp"
#include "gpe/strings.hpp"

namespace gpe {

inline constexpr size_t kInitialFileSize = size_t{1} << 16;
inline constexpr size_t kHeaderSize = 8;

// A file whose content does not follow the format.
class FormatError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// prometheus_client up to 0.17 stores only the value (8 bytes) after each
// key; 0.18 added the timestamp of mostrecent gauges (16 bytes).
enum class EntryLayout { kValueAndTimestamp, kValueOnly };

// The layout of this process's files. Process-wide because it is the layout
// of the prometheus_client release the process runs with: set once at start
// (the Python package from prometheus_client, the agent from a flag).
void set_entry_layout(EntryLayout layout);
EntryLayout entry_layout();

// Bytes after the key: the value, and the timestamp if the layout has one.
inline size_t value_bytes() { return entry_layout() == EntryLayout::kValueOnly ? 8 : 16; }

// Padded size of one entry for a key of `key_len` bytes.
inline size_t entry_size(size_t key_len) {
    return 4 + key_len + (8 - (key_len + 4) % 8) + value_bytes();
}

// Which file a path named when it was read (files are only appended to, so
// an entry at a given offset of the same file never changes its key).
struct FileIdentity {
    uint64_t device = 0;
    uint64_t inode = 0;
    bool operator==(const FileIdentity&) const = default;
};

// Reads the used part of a file into `buffer` (reused between calls).
// Throws FormatError for an empty, truncated or impossible header and
// std::system_error when the file cannot be read.
FileIdentity read_used_region(const std::string& path, std::string& buffer);

// Calls fn(key, value, timestamp) for each entry of a used region. Throws
// FormatError, naming the offset, for an entry that runs past the end.
template <typename Fn>
void for_each_entry(std::string_view data, Fn&& fn);

// An owned shared memory mapping.
class Mapping {
  public:
    Mapping(int fd, size_t size);  // MAP_SHARED, read-write
    Mapping(Mapping&& other) noexcept;
    Mapping& operator=(Mapping&&) = delete;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping();
    char* data() const { return data_; }
    size_t size() const { return size_; }

  private:
    char* data_ = nullptr;
    size_t size_ = 0;
};

// The writer side of one file, e.g. counter_1234.db. Its pages are allocated
// before they are mapped (posix_fallocate), so a full filesystem is an error
// from the constructor, slot() or reserve(), never a SIGBUS. Not thread-safe: the
// owner serialises calls. Pointers returned by slot() stay valid for the life
// of the object, also after the file grows (old mappings are kept; being
// MAP_SHARED views of the same file they stay coherent).
class MmapFile {
  public:
    // Opens or creates the file. Throws std::system_error naming the path,
    // or FormatError when an existing file is corrupt.
    explicit MmapFile(std::string path);

    // The [value, timestamp] of `key` (just [value] in the value-only
    // layout), appended (zeroed) if new.
    double* slot(std::string_view key);

    // Room for every one of `keys` that is new, so that slot() for them
    // cannot fail midway (the archive folds all of a file or nothing).
    // Throws std::system_error when the file cannot grow.
    void reserve(const std::vector<std::string_view>& keys);

    // The slot of `key` if present, without creating it.
    double* find(std::string_view key) const;

    const std::string& path() const { return path_; }
    size_t capacity() const { return capacity_; }
    // Whether path() still names this file (it was not removed or replaced).
    bool is_file_at_path() const;

  private:
    void grow_to(size_t min_capacity);
    char* base() const { return mappings_.back().data(); }

    std::string path_;
    FileDescriptor fd_;
    std::vector<Mapping> mappings_;
    size_t capacity_ = 0;
    size_t used_ = 0;
    StringMap<size_t> positions_;  // key -> offset of value
};

// ---- implementation of the template ----

template <typename Fn>
void for_each_entry(std::string_view data, Fn&& fn) {
    size_t pos = kHeaderSize;
    const size_t used = data.size();
    while (pos < used) {
        if (pos + 4 > used)
            throw FormatError("entry header past the used size at offset " + std::to_string(pos));
        int32_t key_len = 0;
        __builtin_memcpy(&key_len, data.data() + pos, 4);
        if (key_len < 0 || pos + entry_size(static_cast<size_t>(key_len)) > used) {
            throw FormatError("entry at offset " + std::to_string(pos) +
                              " runs past the used size " + std::to_string(used));
        }
        const std::string_view key = data.substr(pos + 4, static_cast<size_t>(key_len));
        const size_t tail = value_bytes();
        pos += entry_size(static_cast<size_t>(key_len)) - tail;
        double value = 0;
        double timestamp = 0;
        __builtin_memcpy(&value, data.data() + pos, 8);
        if (tail == 16) __builtin_memcpy(&timestamp, data.data() + pos + 8, 8);
        fn(key, value, timestamp);
        pos += tail;
    }
}

}  // namespace gpe
