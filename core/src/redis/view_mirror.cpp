#include "gpe/redis/view_mirror.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <system_error>

#include "gpe/mmap_file.hpp"
#include "gpe/multiprocess.hpp"
#include "gpe/redis/fleet.hpp"
#include "gpe/redis/writer.hpp"
#include "gpe/strings.hpp"

namespace gpe::redis {

namespace {

constexpr std::string_view kNodeFile = "/.gpe-node";

// Fields (set or deleted) per write script: a pass that sends much (the
// first, a resend) goes as several scripts, so that none holds Redis for
// long (a few ms for 1,000 fields on a loaded machine).
constexpr size_t kFieldsPerScript = 1000;

// KEYS: view, marker, alive. ARGV: the marker expected ("" when not
// checked), the new marker, the retired word, the alive and the data
// deadlines (Unix ms; "" without a TTL), how many fields are set, "1" when
// this script continues the one before it (the marker must be the one it
// wrote), then the fields and values to set, then the fields to delete.
// Answers {status, marker found}: "ok", "retired" (nothing written: the node
// was folded), "broken" (nothing written: the marker is not the one the
// script before wrote) or "wrongtype".
constexpr const char* kWriteScript = R"lua(
local marker = redis.pcall('GET', KEYS[2])
if type(marker) ~= 'string' then marker = false end
local word = ARGV[3] .. ':'
if marker and string.sub(marker, 1, #word) == word then return {'retired', marker} end
if ARGV[7] == '1' and marker ~= ARGV[1] then return {'broken', marker} end
local t = redis.call('TYPE', KEYS[1])
t = type(t) == 'table' and t.ok or t
if t ~= 'hash' and t ~= 'none' then return {'wrongtype', t} end
local last = 7 + 2 * tonumber(ARGV[6])
for i = 8, last, 400 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(last, i + 399)))
end
for i = last + 1, #ARGV, 400 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(#ARGV, i + 399)))
end
if ARGV[5] ~= '' then
  redis.call('PEXPIREAT', KEYS[1], ARGV[5])
  redis.call('SET', KEYS[2], ARGV[2], 'PXAT', ARGV[5])
  redis.call('SET', KEYS[3], '1', 'PXAT', ARGV[4])
else
  redis.call('PERSIST', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[3], '1')
end
return {'ok', marker}
)lua";

// How one instance merges a store over its processes: as the fleet would
// (store_kind's fold rules), live modes as the mode they are the live half
// of, since every process here is alive or archived.
Fold instance_rule(Store store) {
    if (store.type == MetricType::gauge) store.mode = base_mode(store.mode);
    return fold_rule(store);
}

struct Merged {
    Store store;
    double value = 0;
    double timestamp = 0;
};

void combine(Merged& into, double value, double timestamp, bool first) {
    switch (instance_rule(into.store)) {
        case Fold::sum:
            into.value += value;
            break;
        case Fold::min:
            if (first || value < into.value) into.value = value;
            break;
        case Fold::max:
            if (first || value > into.value) into.value = value;
            break;
        case Fold::mostrecent:  // as merge.cpp: the latest timestamp above 0
            if (into.timestamp < timestamp) {
                into.value = value;
                into.timestamp = timestamp;
            }
            break;
        default:  // keep: one process's value
            into.value = value;
    }
}

std::string read_token(const std::string& path) {
    std::ifstream in(path);
    std::string token;
    in >> token;
    return token;
}

// Writes the token through a temporary file, so that a reader never sees
// half of it; `replace`: over an existing one, else only if there is none.
bool write_token(const std::string& path, const std::string& token, bool replace) {
    const std::string temporary = concat(path, ".", std::to_string(::getpid()));
    {
        std::ofstream out(temporary, std::ios::trunc);
        out << token << "\n";
        if (!out.flush()) {
            ::unlink(temporary.c_str());
            throw std::system_error(errno, std::generic_category(), "cannot write " + path);
        }
    }
    const int result = replace ? ::rename(temporary.c_str(), path.c_str())
                               : ::link(temporary.c_str(), path.c_str());
    const int error = errno;
    ::unlink(temporary.c_str());
    if (result == 0) return true;
    if (!replace && error == EEXIST) return false;
    throw std::system_error(error, std::generic_category(), "cannot write " + path);
}

}  // namespace

struct ViewMirror::State {
    explicit State(int ttl_seconds) : deadline(ttl_seconds) {}
    std::string node;
    StringMap<std::string> sent;  // field -> the value text the view holds
    StringMap<double> base;       // field -> subtracted (a node continued)
    std::string marker_written;   // value of the last write that got through
    uint64_t marker_seq = 0;
    uint64_t epoch_sent = UINT64_MAX;  // connection epoch of the last full pass
    Deadline deadline;
    std::string buffer;
};

// A write script's part of a batch: where its part of `set` and `removed`
// ends, and the marker it writes.
struct ViewMirror::Chunk {
    size_t set_end;
    size_t removed_end;
    std::string marker;
};

struct ViewMirror::Batch {
    bool resend = false;
    bool refresh = false;
    StringMap<Merged> merged;
    std::vector<std::pair<std::string, std::string>> set;  // field, value text
    std::vector<std::string> removed;
    std::vector<Chunk> chunks;  // one write script each, in order
    std::vector<Command> writes;
};

ViewMirror::ViewMirror(std::shared_ptr<Client> client, MirrorOptions options)
    : client_(std::move(client)),
      options_(std::move(options)),
      state_(std::make_unique<State>(options_.ttl_seconds)) {}

ViewMirror::~ViewMirror() = default;

const std::string& ViewMirror::node() const { return state_->node; }

void ViewMirror::load_node() {
    const std::string path = options_.directory + std::string(kNodeFile);
    std::string token = read_token(path);
    if (token.empty()) {
        const std::string fresh = new_keyset_version().substr(0, 16);
        token = write_token(path, fresh, false) ? fresh : read_token(path);
    }
    if (token.empty()) throw std::system_error(EIO, std::generic_category(), "empty " + path);
    state_->node = node::node_id(options_.instance, token);
}

void ViewMirror::merge_directory(Batch& batch, Diagnostics& diagnostics) {
    State& s = *state_;
    const DirectoryLock lock(options_.directory, DirectoryLock::Mode::kShared);
    for (const std::string& path : list_db_files(options_.directory)) {
        const FileName name = parse_file_name(path);
        if (!name.valid) continue;  // the reader warns about foreign files
        try {
            read_used_region(path, s.buffer);
        } catch (const std::system_error& e) {
            if (e.code().value() != ENOENT)
                diagnostics.warn(concat("mirror skipped ", path, ": ", e.what()));
            continue;
        } catch (const FormatError& e) {
            diagnostics.warn(concat("mirror skipped corrupt file ", path, ": ", e.what()));
            continue;
        }
        const std::string process = process_id(name.process, options_.instance);
        try {
            for_each_entry(s.buffer, [&](std::string_view key, double value, double timestamp) {
                auto [it, first] = batch.merged.try_emplace(
                    node::view_field(name.kind, process, key), Merged{name.kind});
                combine(it->second, value, timestamp, first);
            });
        } catch (const FormatError& e) {
            diagnostics.warn(concat("mirror skipped corrupt file ", path, ": ", e.what()));
        }
    }
}

void ViewMirror::build(Batch& batch) {
    State& s = *state_;
    for (const auto& [field, merged] : batch.merged) {
        double value = merged.value;
        if (auto base = s.base.find(field); base != s.base.end()) value -= base->second;
        std::string text = node::view_value(merged.store, value, merged.timestamp);
        auto sent = s.sent.find(field);
        if (batch.resend || sent == s.sent.end() || sent->second != text)
            batch.set.emplace_back(field, std::move(text));
    }
    for (const auto& item : s.sent) {
        if (!batch.merged.contains(item.first)) batch.removed.push_back(item.first);
    }
    std::string expected = batch.resend ? "" : s.marker_written;
    size_t set_at = 0;
    size_t removed_at = 0;
    do {
        const size_t set_end = std::min(batch.set.size(), set_at + kFieldsPerScript);
        const size_t removed_end =
            std::min(batch.removed.size(), removed_at + kFieldsPerScript - (set_end - set_at));
        Chunk chunk{set_end, removed_end, concat(s.node, ":", std::to_string(++s.marker_seq))};
        batch.writes.push_back(write_command(batch, set_at, removed_at, chunk, expected));
        expected = chunk.marker;
        batch.chunks.push_back(std::move(chunk));
        set_at = set_end;
        removed_at = removed_end;
    } while (set_at < batch.set.size() || removed_at < batch.removed.size());
}

Command ViewMirror::write_command(const Batch& batch, size_t set_at, size_t removed_at,
                                  const Chunk& chunk, const std::string& expected) const {
    const State& s = *state_;
    const bool expires = s.deadline.enabled();
    const long long alive_at = expires ? std::stoll(s.deadline.text()) : 0;
    Command write{"EVAL", kWriteScript, "3", node::node_key(options_.prefix, s.node, node::kView),
                  node::node_key(options_.prefix, s.node, node::kMarker),
                  node::node_key(options_.prefix, s.node, node::kAlive), expected, chunk.marker,
                  std::string(node::kRetired), expires ? std::to_string(alive_at) : "",
                  // The data outlives the node by a TTL: time for any agent
                  // to fold it after its deadline passed.
                  expires ? std::to_string(alive_at + options_.ttl_seconds * 1000LL) : "",
                  std::to_string(chunk.set_end - set_at), set_at || removed_at ? "1" : ""};
    for (size_t i = set_at; i < chunk.set_end; ++i) {
        write.push_back(batch.set[i].first);
        write.push_back(batch.set[i].second);
    }
    for (size_t i = removed_at; i < chunk.removed_end; ++i) write.push_back(batch.removed[i]);
    return write;
}

ViewMirror::Written ViewMirror::apply(Batch& batch, const std::vector<Reply>& replies) {
    State& s = *state_;
    bool lost = false;
    size_t set_at = 0;
    size_t removed_at = 0;
    for (size_t i = 0; i < batch.chunks.size(); ++i) {
        const Reply& answer = replies[i];
        if (answer.is_error() || answer.type != Reply::Type::kArray ||
            answer.elements.size() != 2) {
            throw Error(Error::Kind::kServer,
                        "mirror write failed: " + (answer.is_error() ? answer.str : "bad reply"));
        }
        const std::string& status = answer.elements[0].str;
        if (status == "wrongtype") {
            throw Error(Error::Kind::kServer,
                        concat("mirror write refused: ",
                               node::node_key(options_.prefix, s.node, node::kView), " is a ",
                               answer.elements[1].str, ", not a hash"));
        }
        // The parts before went through: they are in the view (or in what
        // was folded of it), so `sent` has them.
        if (status == "retired") return Written::kRetired;
        if (status == "broken") return Written::kLost;
        const Reply& found = answer.elements[1];
        if (i == 0) {
            lost = !batch.resend && !s.marker_written.empty() &&
                   !(found.type == Reply::Type::kString && found.str == s.marker_written);
        }
        const Chunk& chunk = batch.chunks[i];
        s.marker_written = chunk.marker;
        for (; set_at < chunk.set_end; ++set_at)
            s.sent[batch.set[set_at].first] = std::move(batch.set[set_at].second);
        for (; removed_at < chunk.removed_end; ++removed_at)
            s.sent.erase(batch.removed[removed_at]);
    }
    return lost ? Written::kLost : Written::kAll;
}

PassReport ViewMirror::pass(Diagnostics& diagnostics) {
    State& s = *state_;
    if (s.node.empty()) load_node();
    const uint64_t epoch_before = client_->connection_epoch();
    Batch batch;
    batch.resend = epoch_before != s.epoch_sent;
    batch.refresh = s.deadline.due(batch.resend);
    if (batch.refresh) s.deadline.renew(*client_);
    merge_directory(batch, diagnostics);
    build(batch);

    // (moved: a first pass's scripts carry every field)
    std::vector<Command> commands = std::move(batch.writes);
    if (batch.refresh || batch.resend) {
        commands.push_back({"ZADD", node::fleet_key(options_.prefix, node::kNodes),
                            s.deadline.enabled() ? s.deadline.text() : "+inf", s.node});
    }
    const std::vector<Reply> replies = client_->pipeline(commands);  // throws on failure
    const PassReport report{batch.set.size(), batch.removed.size(), commands.size(), batch.refresh};
    const Written written = apply(batch, replies);
    if (written == Written::kRetired) {
        start_new_node(diagnostics);
        return pass(diagnostics);
    }
    if (replies.size() > batch.chunks.size() && replies.back().is_error())
        diagnostics.warn(concat("mirror could not register its node: ", replies.back().str));

    const bool reconnected = client_->connection_epoch() != epoch_before;
    if (written == Written::kLost) {
        diagnostics.warn(concat("Redis lost keys of this instance (its node ", s.node,
                                "; FLUSHALL, eviction or a failover?): sending everything again"));
    }
    if (written == Written::kLost || (reconnected && !batch.resend)) {
        s.epoch_sent = UINT64_MAX;
        PassReport again = pass(diagnostics);
        again.commands += report.commands;
        return again;
    }
    // This pass reached Redis on a connection that has everything now.
    s.epoch_sent = client_->connection_epoch();
    if (batch.refresh) s.deadline.confirm();
    return report;
}

void ViewMirror::start_new_node(Diagnostics& diagnostics) {
    State& s = *state_;
    // What the view held went into the archive: from now on only what is
    // counted beyond it is published, under a new node.
    if (s.sent.empty() && s.base.empty()) {
        diagnostics.warn(concat("node ", s.node,
                                " was folded into the fleet archive before this mirror sent "
                                "anything; its counts may be counted twice"));
    }
    for (const auto& [field, text] : s.sent) {
        const auto parsed = node::parse_view_field(field);
        const auto value = node::parse_view_value(text);
        if (!parsed || !value || fleet_fold_rule(parsed->store) != Fold::sum) continue;
        s.base[field] += value->first;
    }
    const std::string old = s.node;
    const std::string token = new_keyset_version().substr(0, 16);
    write_token(options_.directory + std::string(kNodeFile), token, true);
    s.node = node::node_id(options_.instance, token);
    s.sent.clear();
    s.marker_written.clear();
    s.epoch_sent = UINT64_MAX;
    diagnostics.warn(concat("node ", old,
                            " was taken for gone and folded into the fleet archive (a stall "
                            "longer than the TTL?); continuing as node ",
                            s.node));
}

void ViewMirror::retire(Diagnostics& diagnostics) {
    pass(diagnostics);
    State& s = *state_;
    // Bounded: a chunk another folder holds is taken over, so this ends
    // unless Redis keeps failing (then it throws).
    for (int round = 0; round < 1000; ++round) {
        if (!fold_node(*client_, options_.prefix, s.node, false, 64).more) break;
    }
    ::unlink((options_.directory + std::string(kNodeFile)).c_str());
    s.node.clear();
    s.sent.clear();
    s.base.clear();
}

std::unique_ptr<Publisher> make_publisher(std::shared_ptr<Client> client, MirrorOptions options) {
    if (options.layout == Layout::series)
        return std::make_unique<Mirror>(std::move(client), std::move(options));
    return std::make_unique<ViewMirror>(std::move(client), std::move(options));
}

}  // namespace gpe::redis
