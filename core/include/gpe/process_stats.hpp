// Resource usage of a process from /proc, for the worker gauges.
#pragma once

#include <sys/types.h>

namespace gpe {

struct ProcessStats {
    double resident_bytes = 0;  // RSS
    double cpu_seconds = 0;     // user + system
    double open_fds = 0;
    double threads = 0;
    double start_time = 0;  // unix seconds
};

// Throws std::runtime_error when /proc cannot be read.
ProcessStats read_process_stats(pid_t pid);

}  // namespace gpe
