// Reads the instance layout (layout.hpp, namespace node) at one moment: the
// node set, each node's view (and, for a node being folded, what is left of
// it) in one transaction per node, then the fleet archive; a chunk folded
// between the two is counted once (fleet.hpp says how). Part of the Reader.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "gpe/diagnostics.hpp"
#include "gpe/redis/client.hpp"
#include "gpe/store_kind.hpp"

namespace gpe::redis {

struct ViewSample {
    std::string_view field;  // the whole field: what identifies the series
    Store store;
    std::string_view process;  // set for the stores that keep processes
    std::string_view json;     // the series key
    double value;
    double timestamp;
};

// The samples of one node, or of the archive.
struct ViewSource {
    std::string origin;
    std::vector<ViewSample> samples;
};

class FleetSnapshot {
  public:
    // The command that lists the nodes (sent with the reader's first ones).
    static Command nodes_command(const std::string& prefix);
    // Reads everything under `prefix`, given what nodes_command() answered;
    // first folds nodes whose deadline passed (a bounded amount per call).
    // Throws Error when Redis fails.
    void read(Client& client, const std::string& prefix, Reply nodes, Diagnostics& diagnostics);

    // Views into the replies this object holds, valid until the next read.
    const std::vector<ViewSource>& sources() const { return sources_; }
    size_t commands() const { return commands_; }
    size_t fields() const { return fields_; }

  private:
    bool read_once(Client& client, const std::string& prefix, const Reply& nodes,
                   Diagnostics& diagnostics);
    void add_fields(ViewSource& source, const Reply& hash, bool only_kept, Diagnostics& diagnostics,
                    std::string_view key);

    std::vector<std::vector<Reply>> replies_;  // kept whole: samples view into them
    std::vector<ViewSource> sources_;
    size_t commands_ = 0;
    size_t fields_ = 0;
};

}  // namespace gpe::redis
