// Bookkeeping for a dead process (prometheus_client's mark_process_dead, plus
// archiving): its live gauges are removed, and its counters, histograms,
// summaries and min/max/sum/mostrecent gauges are folded into per-directory
// archive files ({type}_archive.db, gauge_{mode}_archive.db) before its files
// are deleted. Totals never go backwards and the directory does not grow with
// every dead worker. `all` gauges are kept per pid, as prometheus_client does:
// their pid label is the data.
#pragma once

#include <string>
#include <string_view>

#include "gpe/multiprocess.hpp"

namespace gpe {

struct ArchiveReport {
    int removed = 0;  // live gauge files deleted
    int folded = 0;   // files folded into archives and deleted
};

inline constexpr std::string_view kArchiveId = "archive";

ArchiveReport mark_process_dead(const std::string& directory, std::string_view pid,
                                Diagnostics& diagnostics);

}  // namespace gpe
