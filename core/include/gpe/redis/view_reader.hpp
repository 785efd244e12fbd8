// Reads the instance layout (layout.hpp, namespace node) at one moment: the
// node set, each node's values (its view only when the values' header says
// the series changed; for a node being folded, what is left of it, in one
// script), then the fleet archive; a chunk folded between the two is
// counted once (fleet.hpp says how). Part of the Reader.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gpe/diagnostics.hpp"
#include "gpe/redis/client.hpp"
#include "gpe/store_kind.hpp"
#include "gpe/strings.hpp"

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

    // A live node's series as its view said at `version` of its values.
    struct CachedNode {
        struct Entry {
            std::string_view field;
            Store store;
            std::string_view process;
            std::string_view json;
            uint32_t slot;
        };
        std::string version;
        Reply view;  // the entries view into it
        std::vector<Entry> entries;
        std::vector<std::string> warnings;  // its fields we skipped, said every scrape
        uint64_t seen = 0;                  // the last read that found the node live
    };

    struct NodeRead;
    // Every node's values or, once retired, what is left of it.
    std::vector<NodeRead> read_nodes(Client& client, const std::string& prefix, const Reply& nodes);
    // The series of the `stale` nodes (indexes into `found`), cached.
    void read_series(Client& client, const std::string& prefix, std::vector<NodeRead>& found,
                     std::vector<size_t> stale);
    // What is left of the retired nodes.
    void read_retired(Client& client, const std::string& prefix, std::vector<NodeRead>& found);
    // The archive, and which of the `asked` chunk ids are folded into it, at
    // one moment.
    const Reply& read_archive(Client& client, const std::string& prefix,
                              const std::vector<std::string>& asked, StringMap<bool>& applied);
    // Pipelines `commands` a few nodes at a time; the replies are kept.
    std::vector<Reply*> pipelined(Client& client, const std::vector<Command>& commands,
                                  size_t per_node);
    // The entries of `view` (which they view into) and what was skipped.
    static void parse_series(const Reply& view, const std::string& origin, CachedNode& into);
    void add_cached(ViewSource& source, const CachedNode& cached, const Reply& values,
                    Diagnostics& diagnostics);
    void add_slotted(ViewSource& source, const Reply& hash, const Reply& values,
                     Diagnostics& diagnostics, std::string_view key);

    std::vector<std::vector<Reply>> replies_;  // kept whole: samples view into them
    StringMap<CachedNode> nodes_;              // live node -> its series
    uint64_t reads_ = 0;
    std::vector<ViewSource> sources_;
    size_t commands_ = 0;
    size_t fields_ = 0;
};

}  // namespace gpe::redis
