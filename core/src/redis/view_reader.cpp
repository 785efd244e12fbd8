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
// A node's keys are read by plain commands, trusted when a guard read
// before them equals the one read after them (so nothing that matters was
// written between); when a writer keeps changing them, by a script (which
// costs the server more: it copies every reply into Lua and back).
constexpr int kPlainRounds = 2;
// KEYS: view, values, marker: a live node whose series changed. Its guard
// is the version of its values, which every change of its series renews.
constexpr const char* kSeriesScript = R"lua(#!lua flags=no-writes
return {redis.pcall('HGETALL', KEYS[1]), redis.pcall('GET', KEYS[2]), redis.pcall('GET', KEYS[3])}
)lua";
// KEYS: folding, folding values, chunk, marker: a retired node. Its guard
// is the marker, which counts the chunks taken.
constexpr const char* kRetiredScript = R"lua(#!lua flags=no-writes
local kinds = {'HGETALL', 'GET', 'HGETALL', 'GET'}
local out = {}
for i = 1, 4 do out[i] = redis.pcall(kinds[i], KEYS[i]) end
return out
)lua";
// The archive and which chunk ids are folded into it, at one moment: by
// plain commands between two reads of the ids' scores, trusted when both
// agree; when folds keep landing between them, by a script.
// KEYS: archive, applied. ARGV: chunk ids. Answers the archive, then what
// ZMSCORE answers (a score, or nil for an id not folded).
constexpr const char* kArchiveScript = R"lua(#!lua flags=no-writes
local scores = {}
for i = 1, #ARGV do scores[i] = redis.call('ZSCORE', KEYS[2], ARGV[i]) end
return {redis.pcall('HGETALL', KEYS[1]), scores}
)lua";

const Reply kNone{Reply::Type::kNil, {}, 0, {}};

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

// The version in a values string's header, or nothing when it has none.
std::optional<std::string_view> version_of(const Reply& values) {
    if (values.type != Reply::Type::kString || values.str.size() < node::kValuesHeader ||
        !values.str.starts_with(node::kValuesMagic))
        return std::nullopt;
    return std::string_view(values.str)
        .substr(node::kValuesMagic.size(), node::kValuesHeader - node::kValuesMagic.size());
}

std::string key_of(const std::string& prefix, const std::string& node, std::string_view what) {
    return node::node_key(prefix, node, what);
}

const Reply& checked(const Reply& reply, std::string_view what) {
    if (reply.is_error()) throw Error(Error::Kind::kServer, concat(what, " failed: ", reply.str));
    return reply;
}

// The id of the next chunk a node would fold: its first while it is live.
std::string next_chunk(const std::string& name, long long taken) {
    return concat(name, "#", std::to_string(std::max(taken, 0LL)));
}

// Whether two ZMSCORE answers name the same ids as folded.
bool same_folded(const Reply& a, const Reply& b) {
    if (a.elements.size() != b.elements.size()) return false;
    for (size_t i = 0; i < a.elements.size(); ++i) {
        if ((a.elements[i].type == Reply::Type::kNil) != (b.elements[i].type == Reply::Type::kNil))
            return false;
    }
    return true;
}

// The `k`th group of `per` replies: of plain commands, or the parts of a
// script's answer.
std::vector<Reply*> group_of(const std::vector<Reply*>& replies, size_t k, size_t per,
                             bool script) {
    std::vector<Reply*> group;
    if (!script) {
        for (size_t j = 0; j < per; ++j) group.push_back(replies[k * per + j]);
        return group;
    }
    Reply& answer = *replies[k];
    checked(answer, "reading a node");
    if (answer.type != Reply::Type::kArray || answer.elements.size() != per)
        throw Error(Error::Kind::kProtocol, "unexpected reply reading a node");
    for (Reply& part : answer.elements) group.push_back(&part);
    return group;
}

}  // namespace

// What one read found of a node.
struct FleetSnapshot::NodeRead {
    const std::string* name = nullptr;
    std::string guard;  // the version of its values (live) or its marker (retired)
    const Reply* values = &kNone;
    bool retired = false;
    const Reply* folding = &kNone;
    const Reply* folding_values = &kNone;
    const Reply* chunk = &kNone;
    long long taken = -1;  // chunks taken so far, for a retired node
    std::string chunk_id;  // the chunk's, when one is there
};

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

std::vector<Reply*> FleetSnapshot::pipelined(Client& client, const std::vector<Command>& commands,
                                             size_t per_node) {
    std::vector<Reply*> out;
    out.reserve(commands.size());
    const size_t step = per_node * kNodesPerBatch;
    for (size_t first = 0; first < commands.size(); first += step) {
        const auto begin = commands.begin() + static_cast<std::ptrdiff_t>(first);
        const auto end =
            commands.begin() + static_cast<std::ptrdiff_t>(std::min(commands.size(), first + step));
        replies_.push_back(client.pipeline({begin, end}));
        for (Reply& reply : replies_.back()) out.push_back(&reply);
    }
    commands_ += commands.size();
    return out;
}

std::vector<FleetSnapshot::NodeRead> FleetSnapshot::read_nodes(Client& client,
                                                               const std::string& prefix,
                                                               const Reply& nodes) {
    // A live node in one round trip's share: its values, then its marker. A
    // marker that is not "retired" was read after the values, so no retire
    // (which renames them) came between. The series of the values' version
    // are known from a scrape before, or read now (read_series).
    std::vector<Command> reads;
    reads.reserve(2 * nodes.elements.size());
    for (const Reply& item : nodes.elements) {
        reads.push_back({"GET", key_of(prefix, item.str, node::kValues)});
        reads.push_back({"GET", key_of(prefix, item.str, node::kMarker)});
    }
    const std::vector<Reply*> live = pipelined(client, reads, 2);
    std::vector<NodeRead> found;
    std::vector<size_t> stale;  // live nodes whose series are read again
    for (size_t i = 0; i < nodes.elements.size(); ++i) {
        NodeRead& read = found.emplace_back();
        read.name = &nodes.elements[i].str;
        if (taken_of(*live[2 * i + 1]) >= 0) {
            read.retired = true;
            read.guard = live[2 * i + 1]->str;
            continue;
        }
        read.values = live[2 * i];
        const auto version = version_of(*read.values);
        if (!version) continue;  // no values yet, or not ours: said below
        read.guard = *version;
        const auto cached = nodes_.find(*read.name);
        if (cached == nodes_.end() || cached->second.version != *version) stale.push_back(i);
    }
    read_series(client, prefix, found, stale);
    read_retired(client, prefix, found);
    for (const NodeRead& read : found) {
        if (auto cached = nodes_.find(*read.name); cached != nodes_.end() && !read.retired)
            cached->second.seen = reads_;
    }
    std::erase_if(nodes_, [this](const auto& item) { return item.second.seen != reads_; });
    return found;
}

bool FleetSnapshot::read_once(Client& client, const std::string& prefix, const Reply& nodes,
                              Diagnostics& diagnostics) {
    replies_.clear();
    sources_.clear();
    fields_ = 0;
    ++reads_;
    const std::vector<NodeRead> found = read_nodes(client, prefix, nodes);
    std::vector<std::string> asked;  // chunk ids whose fold is asked for
    for (const NodeRead& read : found) {
        if (!read.chunk_id.empty()) asked.push_back(read.chunk_id);
        asked.push_back(next_chunk(*read.name, read.taken));
    }
    StringMap<bool> applied;
    const Reply& archive = read_archive(client, prefix, asked, applied);

    for (const NodeRead& read : found) {
        // A chunk folded after the node was read (live, or what was left of
        // it) is in the archive read after it too: read again.
        if (applied.contains(next_chunk(*read.name, read.taken))) return false;
        ViewSource source{concat("Redis node ", *read.name), {}};
        if (!read.retired) {
            if (auto cached = nodes_.find(*read.name); cached != nodes_.end()) {
                add_cached(source, cached->second, *read.values, diagnostics);
            } else if (read.values->type != Reply::Type::kNil) {
                add_slotted(source, kNone, *read.values, diagnostics, "values");
            }
        } else {
            add_slotted(source, *read.folding, *read.folding_values, diagnostics, "folding");
            if (read.chunk_id.empty() || !applied.contains(read.chunk_id))
                add_fields(source, *read.chunk, true, diagnostics, "chunk");
        }
        sources_.push_back(std::move(source));
    }
    ViewSource folded{concat("Redis ", node::fleet_key(prefix, node::kArchive)), {}};
    add_fields(folded, archive, true, diagnostics, "archive");
    sources_.push_back(std::move(folded));
    return true;
}

const Reply& FleetSnapshot::read_archive(Client& client, const std::string& prefix,
                                         const std::vector<std::string>& asked,
                                         StringMap<bool>& applied) {
    const std::string archive = node::fleet_key(prefix, node::kArchive);
    const std::string folded = node::fleet_key(prefix, node::kApplied);
    if (asked.empty()) {  // one command is one moment
        replies_.push_back(client.pipeline({{"HGETALL", archive}}));
        ++commands_;
        return replies_.back().back();
    }
    Command scores{"ZMSCORE", folded};
    scores.insert(scores.end(), asked.begin(), asked.end());
    for (int round = 0;; ++round) {
        const bool script = round == kPlainRounds;
        if (script) {
            Command read_all{"EVAL", kArchiveScript, "2", archive, folded};
            read_all.insert(read_all.end(), asked.begin(), asked.end());
            replies_.push_back(client.pipeline({read_all}));
        } else {
            replies_.push_back(client.pipeline({scores, {"HGETALL", archive}, scores}));
        }
        std::vector<Reply>& got = replies_.back();
        commands_ += got.size();
        // The archive's own error (another type) is said when it is added.
        checked(got[0], "reading the fleet archive");
        if (script && (got[0].type != Reply::Type::kArray || got[0].elements.size() != 2))
            throw Error(Error::Kind::kProtocol, "unexpected reply reading the fleet archive");
        const Reply& before = script ? got[0].elements[1] : got[0];
        const Reply& after = script ? before : checked(got[2], "reading the fleet archive");
        if (before.type != Reply::Type::kArray || before.elements.size() != asked.size())
            throw Error(Error::Kind::kProtocol, "unexpected reply reading the fleet archive");
        if (!same_folded(before, after)) continue;  // a chunk was folded while read
        for (size_t i = 0; i < asked.size(); ++i) {
            if (before.elements[i].type != Reply::Type::kNil) applied[asked[i]] = true;
        }
        return script ? got[0].elements[0] : got[1];
    }
}

void FleetSnapshot::read_series(Client& client, const std::string& prefix,
                                std::vector<NodeRead>& found, std::vector<size_t> stale) {
    for (int round = 0; !stale.empty(); ++round) {
        const bool script = round == kPlainRounds;
        std::vector<Command> reads;
        for (size_t i : stale) {
            const std::string& name = *found[i].name;
            std::string view = key_of(prefix, name, node::kView);
            std::string values = key_of(prefix, name, node::kValues);
            std::string marker = key_of(prefix, name, node::kMarker);
            if (script) {
                reads.push_back({"EVAL", kSeriesScript, "3", view, values, marker});
            } else {
                reads.push_back({"HGETALL", view});
                reads.push_back({"GET", values});
                reads.push_back({"GET", marker});
            }
        }
        const std::vector<Reply*> answers = pipelined(client, reads, script ? 1 : 3);
        std::vector<size_t> again;
        for (size_t k = 0; k < stale.size(); ++k) {
            NodeRead& read = found[stale[k]];
            const auto group = group_of(answers, k, 3, script);
            if (taken_of(*group[2]) >= 0) {  // retired meanwhile
                read.retired = true;
                read.guard = group[2]->str;
                continue;
            }
            read.values = group[1];
            const auto version = version_of(*read.values);
            if (!version) continue;        // gone meanwhile, or not ours: said when added
            if (*version != read.guard) {  // the series changed while read
                read.guard = *version;
                again.push_back(stale[k]);
                continue;
            }
            CachedNode& cached = nodes_[*read.name];
            cached.version = *version;
            cached.view = std::move(*group[0]);
            parse_series(cached.view, concat("Redis node ", *read.name), cached);
        }
        stale = std::move(again);
    }
}

void FleetSnapshot::read_retired(Client& client, const std::string& prefix,
                                 std::vector<NodeRead>& found) {
    std::vector<size_t> retired;
    for (size_t i = 0; i < found.size(); ++i) {
        if (found[i].retired) retired.push_back(i);
    }
    for (int round = 0; !retired.empty(); ++round) {
        const bool script = round == kPlainRounds;
        std::vector<Command> reads;
        for (size_t i : retired) {
            const std::string& name = *found[i].name;
            std::vector<std::string> keys;
            for (std::string_view what :
                 {node::kFolding, node::kFoldingValues, node::kChunk, node::kMarker})
                keys.push_back(key_of(prefix, name, what));
            if (script) {
                reads.push_back({"EVAL", kRetiredScript, "4", keys[0], keys[1], keys[2], keys[3]});
            } else {
                reads.push_back({"HGETALL", keys[0]});
                reads.push_back({"GET", keys[1]});
                reads.push_back({"HGETALL", keys[2]});
                reads.push_back({"GET", keys[3]});
            }
        }
        const std::vector<Reply*> answers = pipelined(client, reads, script ? 1 : 4);
        std::vector<size_t> again;
        for (size_t k = 0; k < retired.size(); ++k) {
            NodeRead& read = found[retired[k]];
            const auto group = group_of(answers, k, 4, script);
            if (!script && group[3]->str != read.guard) {  // a chunk was taken while read
                read.guard = group[3]->str;
                again.push_back(retired[k]);
                continue;
            }
            read.folding = group[0];
            read.folding_values = group[1];
            read.chunk = group[2];
            read.taken = taken_of(*group[3]);
            read.chunk_id = chunk_id_of(*group[2]);
        }
        retired = std::move(again);
    }
}

void FleetSnapshot::parse_series(const Reply& view, const std::string& origin, CachedNode& into) {
    into.entries.clear();
    into.warnings.clear();
    if (view.is_error()) {
        into.warnings.push_back(concat("skipped the view of ", origin, ": ", view.str));
        return;
    }
    for (size_t i = 0; i + 1 < view.elements.size(); i += 2) {
        const std::string& field = view.elements[i].str;
        const auto parsed = node::parse_view_field(field);
        const auto slot = node::parse_slot(view.elements[i + 1].str);
        if (!parsed || !slot) {
            into.warnings.push_back(concat("skipped field ", field.substr(0, 200),
                                           " of the view of ", origin,
                                           ": not of the instance layout"));
            continue;
        }
        into.entries.push_back({field, parsed->store, parsed->process, parsed->json, *slot});
    }
}

void FleetSnapshot::add_cached(ViewSource& source, const CachedNode& cached, const Reply& values,
                               Diagnostics& diagnostics) {
    for (const std::string& warning : cached.warnings) diagnostics.warn(warning);
    size_t missing = 0;
    source.samples.reserve(source.samples.size() + cached.entries.size());
    for (const CachedNode::Entry& entry : cached.entries) {
        const auto slot = node::read_slot(values.str, entry.slot);
        if (!slot) {
            ++missing;
            continue;
        }
        source.samples.push_back(ViewSample{entry.field, entry.store, entry.process, entry.json,
                                            slot->first, slot->second});
        ++fields_;
    }
    if (missing > 0) {
        diagnostics.warn(concat("skipped ", std::to_string(missing), " series of ", source.origin,
                                ": their slots are past the end of its values"));
    }
}

void FleetSnapshot::add_slotted(ViewSource& source, const Reply& hash, const Reply& values,
                                Diagnostics& diagnostics, std::string_view key) {
    if (values.is_error() || (values.type != Reply::Type::kNil && !version_of(values))) {
        diagnostics.warn(concat("skipped the ", key, " of ", source.origin, ": its values are ",
                                values.is_error() ? values.str : "not of the instance layout"));
        return;
    }
    if (values.type == Reply::Type::kNil) {
        // Mirrored before the values key existed: the fields hold the text.
        add_fields(source, hash, true, diagnostics, key);
        return;
    }
    // What is left of a gone node: only what the archive keeps of it.
    CachedNode series;
    parse_series(hash, source.origin, series);
    std::erase_if(series.entries, [](const CachedNode::Entry& entry) {
        return fleet_fold_rule(entry.store) == Fold::drop;
    });
    add_cached(source, series, values, diagnostics);
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
