// Native values for prometheus_client's multiprocess mode: each value is a
// slot in a memory-mapped file ({type}_{identity}.db or
// gauge_{mode}_{identity}.db), updated with one atomic store, no lock and no
// system call on the hot path.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "gpe/exemplar.hpp"
#include "gpe/mmap_file.hpp"
#include "gpe/strings.hpp"

namespace gpe {

class Value;

// File name prefix for a value: the type, or gauge_{mode}. Throws
// std::invalid_argument naming the bad type or mode.
std::string file_prefix_for(std::string_view type, std::string_view multiprocess_mode);

// The process identity a group of values writes under - the {identity} of
// {prefix}_{identity}.db - with the group's files and its values in creation
// order. prometheus_client's MultiProcessValue(process_identifier) makes one
// such group per value class, and several coexist in one process. The
// default group is this process's pid and follows fork by itself; a named
// group keeps its name across fork, because its caller's identifier function
// decides when it changes (rename()).
class ProcessIdentity {
    struct Private {};

  public:
    // The default group: this process's pid.
    static const std::shared_ptr<ProcessIdentity>& pid();
    // A group named by the caller.
    static std::shared_ptr<ProcessIdentity> named(std::string name);

    ProcessIdentity(Private, std::string name, bool follows_pid);
    ProcessIdentity(const ProcessIdentity&) = delete;
    ProcessIdentity& operator=(const ProcessIdentity&) = delete;

    // The name in file names (the pid for the default group).
    std::string name();
    // A named group only: moves every value of the group, in creation order,
    // to the files of `name`, creating their entries there (prometheus_client's
    // reset after a pid change). Nothing happens when the name is the same.
    // Throws std::logic_error for the default group.
    void rename(std::string name);
    // Closes the group's files; its values reopen them at their next update.
    void close_files();

    // Bumped whenever the group's values must look up their slots again.
    uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

    // The [value, timestamp] slot of `key` in file `prefix` of this group,
    // created if new. When the file cannot hold it (a full filesystem, a
    // directory gone), `memory` is returned instead and the store reports the
    // failure: the value stays exact in this process, only not in the files.
    double* bind(std::string_view prefix, std::string_view key, double* memory,
                 uint64_t& generation_out);

    // Every value ever created in the group (prometheus_client keeps them all
    // too), so that after fork or a rename all of them get their slot in the
    // new files at once, in creation order, as prometheus_client's values do.
    size_t add(Value* value);  // returns the value's index
    void remove(size_t index);

    // The exemplar record of `key` in file `prefix` in this group's exemplar
    // file (exemplars_{name}.db), with room for `label_bytes`: created if
    // `create`, else only found. Empty when there is none or no room (a full
    // filesystem: reported as a storage failure, the exemplar is dropped).
    ExemplarSlot exemplar_slot(std::string_view prefix, std::string_view key, size_t label_bytes,
                               bool create, uint64_t& generation_out);

  private:
    friend class ValueStore;
    // All with the store's mutex held.
    MmapFile& file_for(std::string_view prefix);
    double* slot_locked(std::string_view prefix, std::string_view key, double* memory);
    void bind_all_locked();
    void retire_files_locked(bool forget_destroyed);
    void after_fork_in_child();
    // The default group in a forked child, before its first file: the
    // parent's files are not ours.
    void forget_parent_files_locked();

    const bool follows_pid_;
    std::string name_;
    pid_t pid_ = 0;  // of the process whose files files_ holds (default group)
    std::atomic<uint64_t> generation_{1};
    StringMap<std::shared_ptr<MmapFile>> files_;
    // Files replaced while values may still hold their slots: kept mapped
    // (writes to them are harmless), taken back while their path still names
    // them; the pid group drops them at the next fork.
    std::vector<std::shared_ptr<MmapFile>> retired_;
    std::shared_ptr<ExemplarFile> exemplars_;                       // opened at the first exemplar
    std::vector<std::shared_ptr<ExemplarFile>> retired_exemplars_;  // as retired_
    struct Created {
        std::string prefix;
        std::string key;
        Value* value;  // nullptr once destroyed: its slot is still created after fork
    };
    std::vector<Created> created_;
};

// What all groups of this process share: one lock, the directory, the files
// (one object per path: two groups with the same name must not append to one
// file through two objects) and the fork handlers. Process-wide because fork
// handlers need a fixed place to reset the files in the child.
class ValueStore {
  public:
    static ValueStore& instance();

    // Directory for files opened from now on; "" means the environment
    // variable PROMETHEUS_MULTIPROC_DIR, read when a file is opened (as
    // prometheus_client does). Existing values of every group move to the
    // new files at their next update.
    void set_directory(std::string directory);

    // Receives warnings (a corrupt file set aside, ...).
    void set_warning_handler(std::function<void(const std::string&)> handler);

    // Closes the files of every group (values reopen theirs at their next update).
    void reset();

    // Storage failures so far (values that live in process memory instead of
    // a file); each failure also increments `counter` when one is given (a
    // value whose slot was made while there was room, e.g. at start).
    uint64_t storage_errors() const { return storage_errors_.load(std::memory_order_relaxed); }
    void count_storage_errors_in(Value* counter);

  private:
    friend class ProcessIdentity;
    friend class Value;
    ValueStore();
    static void before_fork();
    static void after_fork_in_parent();
    static void after_fork_in_child();
    // With mutex_ held: the file {prefix}_{name}.db of the directory.
    std::shared_ptr<MmapFile> open_locked(std::string_view prefix, std::string_view name);
    // With mutex_ held: our object for `path`, one a group uses or a replaced
    // one that still is the file at `path` (switching back and forth between
    // names or directories then keeps one mapping per file).
    std::shared_ptr<MmapFile> find_ours_locked(const std::string& path) const;
    // With mutex_ held: the exemplar file of group name `name`, ours if a
    // group has it open already.
    std::shared_ptr<ExemplarFile> open_exemplars_locked(std::string_view name);
    std::string resolve_directory() const;
    void add_identity_locked(const std::shared_ptr<ProcessIdentity>& identity);
    // With mutex_ held: a value could not be stored; reported by
    // deliver_reports() (one warning per directory and cause).
    void storage_failed_locked(const std::system_error& error);
    // Without mutex_: warnings and counts of failures since the last call.
    // (The warning handler and the counter may take other locks, the GIL
    // among them, so they are never called with mutex_ held.)
    void deliver_reports();

    std::mutex mutex_;
    std::string directory_;
    std::vector<std::weak_ptr<ProcessIdentity>> identities_;
    std::shared_ptr<ProcessIdentity> pid_identity_;
    std::function<void(const std::string&)> warn_;
    std::atomic<uint64_t> storage_errors_{0};
    uint64_t undelivered_errors_ = 0;
    std::vector<std::string> undelivered_warnings_;
    std::set<std::pair<std::string, int>> reported_;  // (directory, errno) warned about
    Value* error_counter_ = nullptr;
};

// One series of one metric, e.g. the `_sum` of a histogram child.
class Value {
  public:
    Value(std::string prefix, std::string key,
          std::shared_ptr<ProcessIdentity> identity = ProcessIdentity::pid());
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
    ProcessIdentity& identity() const { return *identity_; }
    // A mostrecent gauge: set() carries a timestamp, inc() is not allowed.
    bool most_recent() const { return most_recent_; }

    // Stores the latest exemplar of this value, for the merged view of the
    // directory (timestamp NaN: none). False when it was not stored: no room
    // in the directory (a storage failure), or another thread stored this
    // value's exemplar at the same moment (theirs is as recent).
    bool set_exemplar(const ExemplarLabels& labels, double value, double timestamp);
    // This process's latest exemplar of this value, if any.
    std::optional<ExemplarValue> exemplar();

  private:
    double* slot() {
        if (generation_.load(std::memory_order_acquire) != identity_->generation()) rebind();
        return slot_.load(std::memory_order_relaxed);
    }
    void rebind();
    // Binds with the store's mutex held (from the group, after fork or a rename).
    void bind_locked(double* slot, uint64_t generation);
    friend class ProcessIdentity;
    friend class ValueStore;

    std::string prefix_;
    std::string key_;
    const std::shared_ptr<ProcessIdentity> identity_;
    bool most_recent_ = false;
    size_t index_ = 0;  // in the group's list of created values
    std::atomic<double*> slot_{nullptr};
    std::atomic<uint64_t> generation_{0};
    double memory_[2] = {0.0, 0.0};         // the slot when no file can hold it
    std::atomic<char*> exemplar_{nullptr};  // the record in the exemplar file
    std::atomic<uint64_t> exemplar_generation_{0};
};

}  // namespace gpe
