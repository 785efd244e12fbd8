// Resource usage of a process from /proc, for the worker gauges, and the
// listen backlog of a socket, for the master's.
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

// Connections waiting in the accept queue of the listening TCP socket `fd`
// (Linux's TCP_INFO tcpi_unacked, as Gunicorn's sock.get_backlog() reads it).
// Throws std::system_error naming the cause (not a TCP socket, a closed fd).
unsigned listen_backlog(int fd);

}  // namespace gpe
