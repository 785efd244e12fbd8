// The wall clock, as Python's time.time() reads it: seconds since the epoch
// with nanosecond resolution (timestamps of mostrecent gauges, uptime, the
// local fallback of Redis TIME).
#pragma once

#include <time.h>

namespace gpe {

// Inline: set_to_current_time calls it on the hot path.
inline double unix_time() {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace gpe
