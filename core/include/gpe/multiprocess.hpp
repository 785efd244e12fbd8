// Reading a multiprocess directory (prometheus_client's file layout) and
// merging it as prometheus_client's MultiProcessCollector does.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gpe/exposition.hpp"
#include "gpe/merge.hpp"

namespace gpe {

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

    // A merge result and the lock that keeps it valid while it is used.
    struct Collected {
        std::unique_lock<std::mutex> lock;
        MergeResult result;
    };

    // All *.db files of `directory`, under a shared lock against
    // mark_process_dead so that a dead process is never counted twice.
    Collected collect_directory(const std::string& directory, bool accumulate = true);

    // prometheus_client's MultiProcessCollector.merge(files, accumulate).
    Collected merge_files(const std::vector<std::string>& paths, bool accumulate = true);

    // collect_directory + render, in one call.
    std::string render_directory(const std::string& directory, Format format,
                                 Diagnostics& diagnostics);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Where the shared/exclusive lock between readers and mark_process_dead lives.
std::string lock_file_path(const std::string& directory);

}  // namespace gpe
