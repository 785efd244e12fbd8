// Reading a multiprocess directory (prometheus_client's file layout) and
// merging it as prometheus_client's MultiProcessCollector does.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "gpe/exposition.hpp"
#include "gpe/merge.hpp"
#include "gpe/mmap_file.hpp"
#include "gpe/store_kind.hpp"

namespace gpe {

// What a file name says: {type}_{process}.db or gauge_{mode}_{process}.db.
struct FileName {
    std::string_view type;
    std::string_view mode;
    std::string_view store;    // the part before the process: type, or gauge_{mode}
    std::string_view process;  // the rest without ".db" (the pid, or "archive")
    std::string_view pid;      // a gauge's pid label, derived as prometheus_client does
    // How it merges: a gauge of a mode that is not one merges as `all`, as
    // prometheus_client's merge treats it.
    Store kind;
    bool valid = false;
};
FileName parse_file_name(std::string_view path);

// The *.db files of a directory in directory order (as glob.glob lists
// them), dot files excluded. Throws std::system_error if it is unreadable.
std::vector<std::string> list_db_files(const std::string& directory);

// Reads multiprocess directories. Keeps what it learnt between scrapes
// (parsed keys, label sets, renderings, each file's entries), so that a
// long-lived reader - the agent, a registered collector - only reads values
// in a steady-state scrape. Safe to share between threads: one scrape at a
// time.
class MultiprocessReader {
  public:
    MultiprocessReader();
    ~MultiprocessReader();
    MultiprocessReader(const MultiprocessReader&) = delete;
    MultiprocessReader& operator=(const MultiprocessReader&) = delete;

    using Collected = gpe::Collected;

    // All *.db files of `directory`, under a shared lock against
    // mark_process_dead so that a dead process is never counted twice.
    Collected collect_directory(const std::string& directory, bool accumulate = true);

    // prometheus_client's MultiProcessCollector.merge(files, accumulate).
    Collected merge_files(const std::vector<std::string>& paths, bool accumulate = true);

    // DirectorySource(*this, directory).render(...), in one call.
    std::string render_directory(const std::string& directory, Format format,
                                 Diagnostics& diagnostics);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Where the shared/exclusive lock between readers and mark_process_dead lives.
std::string lock_file_path(const std::string& directory);

// Readers (scrapes, the Redis mirror) hold the directory shared, and
// mark_process_dead exclusive, so that nobody sees a dead process's values
// both in its own file and in the archive.
//
// flock() belongs to the open file, which a fork() shares: a child forked
// while another thread holds the lock would hold it for its whole life (a
// worker forked during a mirror pass would block every mark_process_dead).
// So the child drops every lock held at the fork (a pthread_atfork handler).
class DirectoryLock {
  public:
    enum class Mode { kShared, kExclusive };
    // Throws std::system_error when an exclusive lock cannot be had.
    DirectoryLock(const std::string& directory, Mode mode);
    ~DirectoryLock();
    DirectoryLock(const DirectoryLock&) = delete;
    DirectoryLock& operator=(const DirectoryLock&) = delete;

  private:
    FileDescriptor fd_;  // closing it releases the lock
};

}  // namespace gpe
