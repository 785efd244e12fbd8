// Folding a dead process's series in Redis itself, for stores that have no
// local multiprocess directory (values written straight into Redis): the
// same bookkeeping as mark_process_dead does for files, done atomically by a
// server-side script. Counters, histograms, summaries and sum gauges are
// added to the instance's archive ({pid} = "archive"), min/max/mostrecent
// gauges merged into it, live gauges deleted, `all` gauges left to expire.
#pragma once

#include <string>
#include <vector>

#include "gpe/redis/client.hpp"

namespace gpe::redis {

struct FoldReport {
    long long folded = 0;   // series added to the archive
    long long deleted = 0;  // keys deleted
    // "skipped Redis key K: why" for each key of another type (not folded,
    // not deleted).
    std::vector<std::string> skipped;
};

// `process` and `archive` are process segments ({pid}@{instance}).
FoldReport fold_process(Client& client, const std::string& prefix, const std::string& process,
                        const std::string& archive);

}  // namespace gpe::redis
