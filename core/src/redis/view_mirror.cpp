#include "gpe/redis/view_mirror.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <fstream>
#include <system_error>
#include <vector>

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
// long (1,000 fields took up to 4 ms on the server at 200 instances; the
// fold's chunks are as large).
constexpr size_t kFieldsPerScript = 500;

// KEYS: view, values, marker, alive. ARGV: the marker expected ("" on a
// resend), the new marker, the retired word, the alive and the data
// deadlines (Unix ms; "" without a TTL), "1" when this script continues the
// one before it (the marker must be the one it wrote), the values header
// ("" when the slots did not change), the values magic, how many fields are
// deleted and how many set, then those fields, then field and slot of each
// set, then offset and bytes of each run of slots to write. Deletes go
// first: a slot freed here may be taken by a field set here or later.
// Answers {status, marker found}: "ok", "retired" (nothing written: the node
// was folded), "broken" (nothing written: the marker is not the one the
// script before wrote, or the values lost their header) or {"wrongtype",
// the type, the key}.
constexpr const char* kWriteScript = R"lua(
local marker = redis.pcall('GET', KEYS[3])
if type(marker) ~= 'string' then marker = false end
local word = ARGV[3] .. ':'
if marker and string.sub(marker, 1, #word) == word then return {'retired', marker} end
if ARGV[6] == '1' and marker ~= ARGV[1] then return {'broken', marker} end
for i, want in ipairs({'hash', 'string'}) do
  local t = redis.call('TYPE', KEYS[i])
  t = type(t) == 'table' and t.ok or t
  if t ~= want and t ~= 'none' then return {'wrongtype', t, KEYS[i]} end
end
if ARGV[1] ~= '' and redis.call('GETRANGE', KEYS[2], 0, #ARGV[8] - 1) ~= ARGV[8] then
  return {'broken', marker}
end
local dels, sets = tonumber(ARGV[9]), tonumber(ARGV[10])
local first_set = 11 + dels
for i = 11, first_set - 1, 400 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(first_set - 1, i + 399)))
end
local runs = first_set + 2 * sets
for i = first_set, runs - 1, 400 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(runs - 1, i + 399)))
end
local size = redis.call('STRLEN', KEYS[2])
if ARGV[7] ~= '' then redis.call('SETRANGE', KEYS[2], 0, ARGV[7]) end
for i = runs, #ARGV, 2 do redis.call('SETRANGE', KEYS[2], tonumber(ARGV[i]), ARGV[i + 1]) end
-- SETRANGE grows a string greedily (to twice what it needs): set again
-- whole, it takes half the memory.
if redis.call('STRLEN', KEYS[2]) > size then
  redis.call('SET', KEYS[2], redis.call('GET', KEYS[2]))
end
if ARGV[5] ~= '' then
  for i = 1, 2 do redis.call('PEXPIREAT', KEYS[i], ARGV[5]) end
  redis.call('SET', KEYS[3], ARGV[2], 'PXAT', ARGV[5])
  redis.call('SET', KEYS[4], '1', 'PXAT', ARGV[4])
else
  for i = 1, 2 do redis.call('PERSIST', KEYS[i]) end
  redis.call('SET', KEYS[3], ARGV[2])
  redis.call('SET', KEYS[4], '1')
end
return {'ok', marker}
)lua";

// A slot number read from Redis beyond this many slots per field is not
// ours (a foreign writer): taking it would grow the values string.
constexpr size_t kSlackSlots = 1024;

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

// A field of the view as this mirror last wrote it.
struct SentField {
    uint32_t slot;
    std::string bytes;  // what its slot holds ("" when not known: re-learnt)
    double value = 0;   // the value in it (for the base of a new node)
};

struct ViewMirror::State {
    explicit State(int ttl_seconds) : deadline(ttl_seconds) {}
    std::string node;
    StringMap<SentField> sent;  // field -> its slot, and what the slot holds
    // Slots [0, slot_end) are taken or in `free_slots`. Rebuilt from the
    // view (learn_slots) on every resend, so that a pass that failed half
    // way never leaves two fields on one slot.
    std::vector<uint32_t> free_slots;
    uint32_t slot_end = 0;
    StringMap<double> base;      // field -> subtracted (a node continued)
    std::string marker_written;  // value of the last write that got through
    uint64_t marker_seq = 0;
    uint64_t epoch_sent = UINT64_MAX;  // connection epoch of the last full pass
    Deadline deadline;
    std::string buffer;

    uint32_t take_slot() {
        if (free_slots.empty()) return slot_end++;
        const uint32_t slot = free_slots.back();
        free_slots.pop_back();
        return slot;
    }
    void forget_slots() {
        sent.clear();
        free_slots.clear();
        slot_end = 0;
    }
};

// A write script's part of a batch: where its part of `set` and `removed`
// ends, and the marker it writes.
struct ViewMirror::Chunk {
    size_t set_end;
    size_t removed_end;
    std::string marker;
};

struct ViewMirror::Batch {
    struct Set {
        std::string field;
        uint32_t slot;
        bool added;  // a field new to the view: its slot is written to it
        std::string bytes;
        double value;
    };
    bool resend = false;
    bool refresh = false;
    StringMap<Merged> merged;
    std::vector<std::string> removed;  // written first (see kWriteScript)
    std::vector<Set> set;
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

void ViewMirror::learn_slots() {
    State& s = *state_;
    const std::string view = node::node_key(options_.prefix, s.node, node::kView);
    const std::vector<Reply> replies = client_->pipeline({{"TYPE", view}, {"HGETALL", view}});
    const std::string& type = replies[0].str;
    if (type != "hash" && type != "none")
        throw Error(Error::Kind::kServer,
                    concat("mirror write refused: ", view, " is a ", type, ", not a hash"));
    s.forget_slots();
    const Reply& fields = replies[1];
    if (fields.is_error())
        throw Error(Error::Kind::kServer, "reading the view failed: " + fields.str);
    const size_t limit = fields.elements.size() / 2 + kSlackSlots;
    std::vector<bool> taken;
    for (size_t i = 0; i + 1 < fields.elements.size(); i += 2) {
        const auto slot = node::parse_slot(fields.elements[i + 1].str);
        // Not a slot of ours, or one taken twice: the field is deleted.
        if (slot && *slot < limit && (*slot >= taken.size() || !taken[*slot])) {
            if (*slot >= taken.size()) taken.resize(*slot + 1, false);
            taken[*slot] = true;
            s.sent.emplace(fields.elements[i].str, SentField{*slot, "", 0});
        } else {
            s.sent.emplace(fields.elements[i].str, SentField{UINT32_MAX, "", 0});
        }
    }
    s.slot_end = static_cast<uint32_t>(taken.size());
    for (uint32_t slot = s.slot_end; slot-- > 0;) {
        if (!taken[slot]) s.free_slots.push_back(slot);
    }
}

void ViewMirror::build(Batch& batch) {
    State& s = *state_;
    for (const auto& item : s.sent) {
        auto merged = batch.merged.find(item.first);
        if (merged == batch.merged.end() || item.second.slot == UINT32_MAX)
            batch.removed.push_back(item.first);
    }
    for (const std::string& field : batch.removed) {
        const uint32_t slot = s.sent.find(field)->second.slot;
        if (slot != UINT32_MAX) s.free_slots.push_back(slot);
    }
    for (const auto& [field, merged] : batch.merged) {
        double value = merged.value;
        if (auto base = s.base.find(field); base != s.base.end()) value -= base->second;
        std::string bytes = node::values_slot(value, merged.timestamp);
        auto sent = s.sent.find(field);
        const bool added = sent == s.sent.end() || sent->second.slot == UINT32_MAX;
        if (added) {
            batch.set.push_back({field, s.take_slot(), true, std::move(bytes), value});
        } else if (batch.resend || sent->second.bytes != bytes) {
            batch.set.push_back({field, sent->second.slot, false, std::move(bytes), value});
        }
    }
    std::string expected = batch.resend ? "" : s.marker_written;
    size_t set_at = 0;
    size_t removed_at = 0;
    do {
        const size_t removed_end = std::min(batch.removed.size(), removed_at + kFieldsPerScript);
        const size_t set_end =
            std::min(batch.set.size(), set_at + kFieldsPerScript - (removed_end - removed_at));
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
    std::vector<const Batch::Set*> added;
    std::vector<const Batch::Set*> slots;  // by slot, for runs
    for (size_t i = set_at; i < chunk.set_end; ++i) {
        if (batch.set[i].added) added.push_back(&batch.set[i]);
        slots.push_back(&batch.set[i]);
    }
    // The slots change for a reader when a field comes or goes, and with
    // every resend (the mirror learnt them again).
    const bool changed = !added.empty() || chunk.removed_end > removed_at ||
                         (batch.resend && set_at == 0 && removed_at == 0);
    Command write{"EVAL", kWriteScript, "4", node::node_key(options_.prefix, s.node, node::kView),
                  node::node_key(options_.prefix, s.node, node::kValues),
                  node::node_key(options_.prefix, s.node, node::kMarker),
                  node::node_key(options_.prefix, s.node, node::kAlive), expected, chunk.marker,
                  std::string(node::kRetired), expires ? std::to_string(alive_at) : "",
                  // The data outlives the node by a TTL: time for any agent
                  // to fold it after its deadline passed.
                  expires ? std::to_string(alive_at + options_.ttl_seconds * 1000LL) : "",
                  set_at || removed_at ? "1" : "",
                  changed ? concat(node::kValuesMagic, new_keyset_version().substr(0, 8)) : "",
                  std::string(node::kValuesMagic), std::to_string(chunk.removed_end - removed_at),
                  std::to_string(added.size())};
    for (size_t i = removed_at; i < chunk.removed_end; ++i) write.push_back(batch.removed[i]);
    for (const Batch::Set* item : added) {
        write.push_back(item->field);
        write.push_back(std::to_string(item->slot));
    }
    std::sort(slots.begin(), slots.end(),
              [](const Batch::Set* a, const Batch::Set* b) { return a->slot < b->slot; });
    for (size_t i = 0; i < slots.size();) {  // one SETRANGE per run of slots
        write.push_back(std::to_string(node::slot_offset(slots[i]->slot)));
        std::string run = slots[i]->bytes;
        size_t j = i + 1;
        for (; j < slots.size() && slots[j]->slot == slots[j - 1]->slot + 1; ++j)
            run += slots[j]->bytes;
        write.push_back(std::move(run));
        i = j;
    }
    return write;
}

ViewMirror::Written ViewMirror::apply(Batch& batch, const std::vector<Reply>& replies) {
    State& s = *state_;
    bool lost = false;
    size_t set_at = 0;
    size_t removed_at = 0;
    for (size_t i = 0; i < batch.chunks.size(); ++i) {
        const Reply& answer = replies[i];
        if (answer.is_error() || answer.type != Reply::Type::kArray || answer.elements.size() < 2) {
            throw Error(Error::Kind::kServer,
                        "mirror write failed: " + (answer.is_error() ? answer.str : "bad reply"));
        }
        const std::string& status = answer.elements[0].str;
        if (status == "wrongtype" && answer.elements.size() == 3) {
            const bool view = answer.elements[2].str.ends_with(node::kView);
            throw Error(Error::Kind::kServer,
                        concat("mirror write refused: ", answer.elements[2].str, " is a ",
                               answer.elements[1].str, ", not a ", view ? "hash" : "string"));
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
        for (; removed_at < chunk.removed_end; ++removed_at)
            s.sent.erase(batch.removed[removed_at]);
        for (; set_at < chunk.set_end; ++set_at) {
            Batch::Set& item = batch.set[set_at];
            s.sent[item.field] = SentField{item.slot, std::move(item.bytes), item.value};
        }
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
    if (batch.resend) learn_slots();
    merge_directory(batch, diagnostics);
    build(batch);

    // (moved: a first pass's scripts carry every field)
    std::vector<Command> commands = std::move(batch.writes);
    if (batch.refresh || batch.resend) {
        commands.push_back({"ZADD", node::fleet_key(options_.prefix, node::kNodes),
                            s.deadline.enabled() ? s.deadline.text() : "+inf", s.node});
    }
    // A pass that fails half way leaves the slots in doubt: the next one
    // learns them again.
    s.epoch_sent = UINT64_MAX;
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
    for (const auto& [field, sent] : s.sent) {
        const auto parsed = node::parse_view_field(field);
        if (!parsed || sent.bytes.empty() || fleet_fold_rule(parsed->store) != Fold::sum) continue;
        s.base[field] += sent.value;
    }
    const std::string old = s.node;
    const std::string token = new_keyset_version().substr(0, 16);
    write_token(options_.directory + std::string(kNodeFile), token, true);
    s.node = node::node_id(options_.instance, token);
    s.forget_slots();
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
    s.forget_slots();
    s.base.clear();
}

std::unique_ptr<Publisher> make_publisher(std::shared_ptr<Client> client, MirrorOptions options) {
    if (options.layout == Layout::series)
        return std::make_unique<Mirror>(std::move(client), std::move(options));
    return std::make_unique<ViewMirror>(std::move(client), std::move(options));
}

}  // namespace gpe::redis
