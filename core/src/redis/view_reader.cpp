#include "gpe/redis/view_reader.hpp"

#include <algorithm>
#include <cstddef>

#include "gpe/redis/fleet.hpp"
#include "gpe/redis/layout.hpp"
#include "gpe/strings.hpp"

namespace gpe::redis {

namespace {

constexpr int kMaxAttempts = 3;

// Live nodes read per round trip: the views of a large fleet in one pipeline
// pile up in the server's output buffer (tens of MB at 200 instances), and
// each HGETALL grows it further; a few at a time keep both the server's and
// our buffers small, for one round trip per batch.
constexpr size_t kNodesPerBatch = 8;

// Scripts, not MULTI: a read is one moment, also when Redis is out of
// memory (it refuses every command queued in a transaction then), and on a
// replica. Each key may hold another type (a foreign writer): pcall.
// KEYS: the node set. Answers every node, and those whose deadline passed
// by the server's clock (16 at most).
constexpr const char* kNodesScript = R"lua(#!lua flags=no-writes
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {redis.call('ZRANGE', KEYS[1], 0, -1),
        redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 16)}
)lua";
// KEYS: view, folding, chunk, marker.
constexpr const char* kNodeScript = R"lua(#!lua flags=no-writes
local out = {}
for i = 1, 3 do out[i] = redis.pcall('HGETALL', KEYS[i]) end
out[4] = redis.pcall('GET', KEYS[4])
return out
)lua";
// KEYS: archive, applied. ARGV: chunk ids. Answers the archive, then 1 for
// each id folded into it and 0 for the others.
constexpr const char* kArchiveScript = R"lua(#!lua flags=no-writes
local out = {redis.pcall('HGETALL', KEYS[1])}
for i = 1, #ARGV do out[i + 1] = redis.call('ZSCORE', KEYS[2], ARGV[i]) and 1 or 0 end
return out
)lua";

struct NodeState {
    const std::string* node;
    const Reply* view = nullptr;
    const Reply* folding = nullptr;
    const Reply* chunk = nullptr;
    long long taken = -1;  // chunks taken so far, for a retired node
    std::string chunk_id;  // the chunk's, when one is there
};

std::string chunk_id_of(const Reply& chunk) {
    for (size_t i = 0; i + 1 < chunk.elements.size(); i += 2) {
        if (chunk.elements[i].str == node::kChunkId) return chunk.elements[i + 1].str;
    }
    return "";
}

long long taken_of(const Reply& marker) {
    const std::string word = concat(node::kRetired, ":");
    if (marker.type != Reply::Type::kString || !marker.str.starts_with(word)) return -1;
    try {
        return std::stoll(marker.str.substr(word.size()));
    } catch (const std::exception&) {
        return -1;
    }
}

std::vector<Command> live_reads(const std::string& prefix, const Reply& nodes) {
    std::vector<Command> batch;
    batch.reserve(2 * nodes.elements.size());
    for (const Reply& item : nodes.elements) {
        batch.push_back({"HGETALL", node::node_key(prefix, item.str, node::kView)});
        batch.push_back({"GET", node::node_key(prefix, item.str, node::kMarker)});
    }
    return batch;
}

std::vector<Command> whole_reads(const std::string& prefix, const Reply& nodes,
                                 const std::vector<size_t>& retired) {
    std::vector<Command> whole;
    for (size_t i : retired) {
        whole.push_back({"EVAL", kNodeScript, "4"});
        for (std::string_view what : {node::kView, node::kFolding, node::kChunk, node::kMarker})
            whole.back().push_back(node::node_key(prefix, nodes.elements[i].str, what));
    }
    return whole;
}

Command archive_read(const std::string& prefix, const std::vector<std::string>& asked) {
    if (asked.empty()) return {"HGETALL", node::fleet_key(prefix, node::kArchive)};
    Command archive{"EVAL", kArchiveScript, "2", node::fleet_key(prefix, node::kArchive),
                    node::fleet_key(prefix, node::kApplied)};
    archive.insert(archive.end(), asked.begin(), asked.end());
    return archive;
}

const Reply& checked(const Reply& reply, std::string_view what) {
    if (reply.is_error()) throw Error(Error::Kind::kServer, concat(what, " failed: ", reply.str));
    return reply;
}

}  // namespace

Command FleetSnapshot::nodes_command(const std::string& prefix) {
    return {"EVAL", kNodesScript, "1", node::fleet_key(prefix, node::kNodes)};
}

void FleetSnapshot::read(Client& client, const std::string& prefix, Reply nodes,
                         Diagnostics& diagnostics) {
    commands_ = 0;
    for (int attempt = 1; attempt <= kMaxAttempts; ++attempt) {
        checked(nodes, "reading the node set");
        if (nodes.type != Reply::Type::kArray || nodes.elements.size() != 2)
            throw Error(Error::Kind::kProtocol, "unexpected reply reading the node set");
        if (attempt == 1 && !nodes.elements[1].elements.empty()) {
            // A reader folds the instances that went away, so that their
            // counts are kept once their keys are reclaimed.
            try {
                fold_expired(client, prefix);
            } catch (const Error& e) {
                diagnostics.warn(
                    concat("cannot fold gone instances into the fleet archive: ", e.what()));
            }
            nodes = client.command(nodes_command(prefix));
            ++commands_;
            continue;
        }
        if (read_once(client, prefix, nodes.elements[0], diagnostics)) return;
        nodes = client.command(nodes_command(prefix));
        ++commands_;
    }
    diagnostics.warn(
        "instances were folded while the fleet was read; this scrape may count a "
        "chunk of one twice");
}

bool FleetSnapshot::read_once(Client& client, const std::string& prefix, const Reply& nodes,
                              Diagnostics& diagnostics) {
    // #lizard forgives: the protocol's read order in one place (fleet.hpp)
    replies_.clear();
    sources_.clear();
    fields_ = 0;
    // A live node in one command: its view, then its marker. A marker that
    // is not "retired" was read after the view, so no retire (which renames
    // the view) came between them. A retired node is read again whole, in
    // one script.
    std::vector<const Reply*> live;  // view, marker of each node
    live.reserve(2 * nodes.elements.size());
    const std::vector<Command> reads = live_reads(prefix, nodes);
    for (size_t first = 0; first < reads.size(); first += 2 * kNodesPerBatch) {
        const auto end = reads.begin() + static_cast<std::ptrdiff_t>(
                                             std::min(reads.size(), first + 2 * kNodesPerBatch));
        replies_.push_back(
            client.pipeline({reads.begin() + static_cast<std::ptrdiff_t>(first), end}));
        for (const Reply& reply : replies_.back()) live.push_back(&reply);
    }
    commands_ += reads.size();
    std::vector<size_t> retired;  // indexes into nodes.elements
    for (size_t i = 0; i < nodes.elements.size(); ++i) {
        if (taken_of(*live[2 * i + 1]) >= 0) retired.push_back(i);
    }
    const std::vector<Command> whole = whole_reads(prefix, nodes, retired);
    const Reply* whole_replies = nullptr;
    if (!whole.empty()) {
        replies_.push_back(client.pipeline(whole));
        whole_replies = replies_.back().data();
    }
    commands_ += whole.size();

    static const Reply kNone{Reply::Type::kArray, {}, 0, {}};
    std::vector<NodeState> states;
    std::vector<std::string> asked;  // chunk ids whose fold is asked for
    for (size_t i = 0, r = 0; i < nodes.elements.size(); ++i) {
        if (r < retired.size() && retired[r] == i) {
            const Reply& exec = checked(whole_replies[r++], "reading a node");
            if (exec.type != Reply::Type::kArray || exec.elements.size() != 4) continue;
            NodeState state{&nodes.elements[i].str,     &exec.elements[0],
                            &exec.elements[1],          &exec.elements[2],
                            taken_of(exec.elements[3]), chunk_id_of(exec.elements[2])};
            if (state.taken >= 0) {
                if (!state.chunk_id.empty()) asked.push_back(state.chunk_id);
                asked.push_back(concat(*state.node, "#", std::to_string(state.taken)));
            }
            states.push_back(std::move(state));
            continue;
        }
        const Reply& view = *live[2 * i];  // an error is named by add_fields
        states.push_back(NodeState{&nodes.elements[i].str, &view, &kNone, &kNone, -1, {}});
    }

    // Without a node being folded, the archive alone (one command is one
    // moment); with one, the archive and the chunks' scores at one moment.
    replies_.push_back(client.pipeline({archive_read(prefix, asked)}));
    ++commands_;
    if (asked.empty()) {  // as the script answers: {archive}
        Reply whole_archive{Reply::Type::kArray, {}, 0, {}};
        whole_archive.elements.push_back(std::move(replies_.back().back()));
        replies_.back().back() = std::move(whole_archive);
    }
    const Reply& exec = checked(replies_.back().back(), "reading the fleet archive");
    if (exec.type != Reply::Type::kArray || exec.elements.size() != asked.size() + 1)
        throw Error(Error::Kind::kProtocol, "unexpected reply reading the fleet archive");
    StringMap<bool> applied;
    for (size_t i = 0; i < asked.size(); ++i) {
        if (exec.elements[i + 1].integer == 1) applied[asked[i]] = true;
    }

    for (const NodeState& state : states) {
        // A chunk taken after the node was read is in the archive read after
        // it, and in the node's `folding` as read: read again.
        if (state.taken >= 0 &&
            applied.contains(concat(*state.node, "#", std::to_string(state.taken))))
            return false;
        ViewSource source{concat("Redis node ", *state.node), {}};
        add_fields(source, *state.view, false, diagnostics, "view");
        add_fields(source, *state.folding, true, diagnostics, "folding");
        if (state.chunk_id.empty() || !applied.contains(state.chunk_id))
            add_fields(source, *state.chunk, true, diagnostics, "chunk");
        sources_.push_back(std::move(source));
    }
    ViewSource folded{concat("Redis ", node::fleet_key(prefix, node::kArchive)), {}};
    add_fields(folded, exec.elements[0], true, diagnostics, "archive");
    sources_.push_back(std::move(folded));
    return true;
}

void FleetSnapshot::add_fields(ViewSource& source, const Reply& hash, bool only_kept,
                               Diagnostics& diagnostics, std::string_view key) {
    if (hash.is_error()) {
        diagnostics.warn(concat("skipped the ", key, " of ", source.origin, ": ", hash.str));
        return;
    }
    for (size_t i = 0; i + 1 < hash.elements.size(); i += 2) {
        const std::string& field = hash.elements[i].str;
        if (field == node::kChunkId) continue;
        const auto parsed = node::parse_view_field(field);
        const auto value = node::parse_view_value(hash.elements[i + 1].str);
        if (!parsed || !value) {
            diagnostics.warn(concat("skipped field ", field.substr(0, 200), " of the ", key, " of ",
                                    source.origin, ": not of the instance layout"));
            continue;
        }
        // What is left of a gone node: only what the archive keeps of it.
        if (only_kept && fleet_fold_rule(parsed->store) == Fold::drop) continue;
        source.samples.push_back(ViewSample{field, parsed->store, parsed->process, parsed->json,
                                            value->first, value->second});
        ++fields_;
    }
}

}  // namespace gpe::redis
