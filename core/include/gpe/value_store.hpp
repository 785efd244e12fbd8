// Native values for prometheus_client's multiprocess mode: each value is a
// slot in this process's memory-mapped file ({type}_{pid}.db or
// gauge_{mode}_{pid}.db), updated with one atomic store, no lock and no
// system call on the hot path.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "gpe/mmap_file.hpp"
#include "gpe/strings.hpp"

namespace gpe {

class Value;

// File name prefix for a value: the type, or gauge_{mode}. Throws
// std::invalid_argument naming the bad type or mode.
std::string file_prefix_for(std::string_view type, std::string_view multiprocess_mode);

// The files of this process. One per process because the files are per
// process ({prefix}_{pid}.db) and fork handlers need a fixed place to reset
// them in the child; this is the reason it is a process-wide singleton.
class ValueStore {
  public:
    static ValueStore& instance();

    // Directory for files opened from now on; "" means the environment
    // variable PROMETHEUS_MULTIPROC_DIR, read when a file is opened (as
    // prometheus_client does). Existing values move to the new files at
    // their next update.
    void set_directory(std::string directory);

    // Receives warnings (a corrupt file set aside, ...).
    void set_warning_handler(std::function<void(const std::string&)> handler);

    // Bumped whenever slots must be looked up again: after fork in the child,
    // and when the directory changes.
    uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

    // The [value, timestamp] slot of `key` in file `prefix` of this process,
    // created if new. Throws std::system_error naming the file on I/O errors.
    double* bind(std::string_view prefix, std::string_view key, uint64_t& generation_out);

    // Closes every file (values reopen theirs at their next update).
    void reset();

    // Every value ever created (prometheus_client keeps them all too), so
    // that after fork all of them get their slot in the child's files at
    // once, in creation order, as prometheus_client's values do.
    size_t add(Value* value);  // returns the value's index
    void remove(size_t index);

  private:
    ValueStore();
    static void before_fork();
    static void after_fork_in_parent();
    static void after_fork_in_child();
    MmapFile& file_for(std::string_view prefix);
    std::string resolve_directory() const;

    std::mutex mutex_;
    std::atomic<uint64_t> generation_{1};
    pid_t pid_;
    std::string directory_;
    StringMap<std::unique_ptr<MmapFile>> files_;
    // Files replaced while values may still hold their slots: kept mapped
    // (writes to them are harmless) until the next fork drops them.
    std::vector<std::unique_ptr<MmapFile>> retired_;
    std::function<void(const std::string&)> warn_;
    struct Created {
        std::string prefix;
        std::string key;
        Value* value;  // nullptr once destroyed: its slot is still created after fork
    };
    std::vector<Created> created_;
};

// One series of one metric, e.g. the `_sum` of a histogram child.
class Value {
  public:
    Value(std::string prefix, std::string key);
    ~Value();
    Value(const Value&) = delete;
    Value& operator=(const Value&) = delete;

    void inc(double amount) {
        std::atomic_ref<double>(*slot()).fetch_add(amount, std::memory_order_relaxed);
    }
    // Sets value and timestamp (0 for "no timestamp", as prometheus_client).
    void set(double value, double timestamp) {
        double* s = slot();
        std::atomic_ref<double>(s[0]).store(value, std::memory_order_relaxed);
        if (entry_layout() == EntryLayout::kValueAndTimestamp) {
            std::atomic_ref<double>(s[1]).store(timestamp, std::memory_order_relaxed);
        }
    }
    double get() { return std::atomic_ref<double>(*slot()).load(std::memory_order_relaxed); }
    double timestamp() {
        if (entry_layout() == EntryLayout::kValueOnly) return 0.0;
        return std::atomic_ref<double>(slot()[1]).load(std::memory_order_relaxed);
    }
    const std::string& key() const { return key_; }
    const std::string& prefix() const { return prefix_; }
    // A mostrecent gauge: set() carries a timestamp, inc() is not allowed.
    bool most_recent() const { return most_recent_; }

  private:
    double* slot() {
        if (generation_.load(std::memory_order_acquire) != ValueStore::instance().generation()) {
            rebind();
        }
        return slot_.load(std::memory_order_relaxed);
    }
    void rebind();
    // Binds with the store's mutex held (from the store, after fork).
    void bind_locked(double* slot, uint64_t generation);
    friend class ValueStore;

    std::string prefix_;
    std::string key_;
    bool most_recent_ = false;
    size_t index_ = 0;  // in the store's list of created values
    std::atomic<double*> slot_{nullptr};
    std::atomic<uint64_t> generation_{0};
};

}  // namespace gpe
