// The fleet archive of the instance layout (layout.hpp, namespace node):
// when an instance leaves (it retires its node on a graceful exit) or
// disappears (its deadline passes; any agent or sidecar retires it), its
// counters, histograms, summaries and sum/min/max/mostrecent gauges are
// folded into one archive, so that fleet totals never go backwards; its live
// and per-process gauges go with it.
//
// Every step is a server-side script bounded in the work it does, and the
// steps are idempotent, so that two agents folding the same node at once
// fold it exactly once, and one that dies half-way leaves nothing lost:
//
//   1. retire (node's slot): the view is renamed to `folding` (and its
//      values to `folding_values`), the marker becomes "retired:0" (a
//      mirror that finds it there knows it was taken for dead);
//   2. take (node's slot): up to kChunkFields fields move from `folding` to
//      `chunk`, each with its value as text, under the id {node}#{T}, T
//      counted in the marker; a chunk taken before and not yet done is
//      answered again;
//   3. apply (fleet's slot): the chunk is folded into the archive unless its
//      id is in `applied` already, and its id is added there;
//   4. done (node's slot): the chunk is deleted; back to 2 until `folding`
//      is empty, then the node leaves the node set.
//
// A reader reads each node (its values and marker; once retired, what is
// left of it) before the archive, and with the archive the `applied` scores
// of the chunks it saw and of each node's next one ({node}#0 for a live
// node), so that a chunk is counted exactly once: a chunk applied already
// is skipped, and a chunk folded after its node was read (live or retired)
// makes the read start again.
#pragma once

#include <string>
#include <vector>

#include "gpe/redis/client.hpp"
#include "gpe/store_kind.hpp"

namespace gpe::redis {

inline constexpr size_t kChunkFields = 500;

// What the archive keeps of a gone node's store: its fold rule (store_kind),
// except that per-process gauges (`all`) go with their instance, as they did
// when their keys expired: the archive stays one hash whatever the churn.
constexpr Fold fleet_fold_rule(Store store) {
    const Fold fold = fold_rule(store);
    return fold == Fold::keep ? Fold::drop : fold;
}

// "counter=sum ... gauge_all=drop": the rules as the scripts take them.
std::string fleet_fold_rules();

struct FleetReport {
    size_t retired = 0;  // nodes retired by this call
    size_t chunks = 0;   // chunks folded into the archive
    size_t folded = 0;   // nodes whose fold finished
    bool more = false;   // work left (the chunk budget ran out)
};

// Retires `node` (unless `only_if_expired` and it is still alive) and folds
// it, at most `max_chunks` chunks. Throws Error when Redis fails; what is
// left is done by the next call, by this process or another.
FleetReport fold_node(Client& client, const std::string& prefix, const std::string& node,
                      bool only_if_expired, size_t max_chunks);

// Every node whose deadline passed, retired and folded (at most `max_nodes`
// nodes and `max_chunks` chunks per call).
FleetReport fold_expired(Client& client, const std::string& prefix, size_t max_nodes = 16,
                         size_t max_chunks = 64);

}  // namespace gpe::redis
