#include "gpe/redis/mirror.hpp"

#include <algorithm>
#include <cstring>
#include <system_error>

#include "gpe/multiprocess.hpp"
#include "gpe/redis/layout.hpp"
#include "gpe/redis/writer.hpp"
#include "gpe/strings.hpp"

namespace gpe::redis {

namespace {

using Clock = std::chrono::steady_clock;

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

constexpr long long kMarkerTtlMs = 24LL * 3600 * 1000;
constexpr size_t kKeysPerDel = 512;

// "EXECABORT Transaction discarded..." says nothing of why: the reason is
// the error answered to the command that was queued (OOM, READONLY, ...).
std::string transaction_error(const std::vector<Command>& commands,
                              const std::vector<Reply>& replies) {
    const Reply& exec = replies.back();
    std::string out = exec.is_error() ? exec.str : std::string("aborted");
    for (size_t i = 0; i + 1 < replies.size(); ++i) {
        if (!replies[i].is_error()) continue;
        std::string what = commands[i][0];
        if (commands[i].size() > 1) what += " " + commands[i][1];
        return concat(replies[i].str, " (answered to ", what, "; ", out, ")");
    }
    return out;
}

}  // namespace

struct Mirror::State {
    explicit State(int ttl_seconds) : deadline(ttl_seconds) {}

    struct Entry {
        std::string metric_key;
        std::string meta_key;
        std::string json;
        double value = 0;
        double timestamp = 0;
        bool sent = false;
    };
    struct File {
        FileIdentity identity;
        std::string type;
        std::string mode;
        std::vector<Entry> entries;
        uint64_t last_seen = 0;
    };
    StringMap<File> files;  // by path
    // Detecting that Redis lost our keys while the connection stayed up
    // (FLUSHALL, eviction of everything, a failover behind a proxy to an
    // empty or stale replica): every transaction reads the instance's marker
    // key and writes a new value into it; a pass that finds anything but the
    // value it wrote last makes the next pass send everything again.
    std::string marker_key;
    std::string token;  // random, this Mirror's
    uint64_t marker_seq = 0;
    std::string marker_written;          // value of the last transaction that got through
    StringMap<bool> warned;              // keys named in a warning (another type), once each
    std::vector<std::string> deletions;  // keys of vanished files, not yet deleted
    uint64_t passes = 0;
    uint64_t epoch_sent = UINT64_MAX;  // connection epoch of the last full pass
    Deadline deadline;                 // this instance's keys expire at it
    Clock::time_point next_verify{};   // TTL 0: when to check that every key still exists
    std::string buffer;
};

// Entries are found again by file and index after the transaction: the
// entry vectors may grow (and move) while the pass reads later entries.
struct Mirror::Batch {
    struct Sent {  // a value's HSET
        State::File* file;
        size_t index;
        double value;
        double timestamp;
        size_t command;
    };
    struct Queued {  // a command whose reply may say the series must be sent again
        size_t command;
        State::File* file;
        size_t index;
        long long expected = 0;  // the least integer reply while the keys are there
    };

    bool resend = false;   // everything is sent (a new connection, or keys were lost)
    bool refresh = false;  // the deadline is renewed
    bool verify = false;   // TTL 0: every series' keys are asked for
    bool lost = false;     // the marker said Redis lost our keys
    std::vector<Command> commands{{"MULTI"}};
    std::vector<Sent> sent;
    // HSETs of meta keys, whose failure (a key of another type) must be seen.
    std::vector<Queued> metas;
    // PEXPIREAT (or EXISTS) of the keys of series sent before: a series whose
    // keys are gone (expired while the mirror stalled, evicted) is sent again.
    std::vector<Queued> renewed;
    std::vector<std::string> deleting;
    bool keys_created = false;
    std::string marker;

    // The commands for one entry whose file was read at this pass.
    void queue(State::File& file, size_t index, double value, double timestamp,
               const Deadline& deadline) {
        State::Entry& entry = file.entries[index];
        const bool first = resend || !entry.sent;
        if (first || !same_bits(value, entry.value) || !same_bits(timestamp, entry.timestamp)) {
            commands.push_back(set_value(entry.metric_key, value, timestamp));
            sent.push_back(Sent{&file, index, value, timestamp, commands.size() - 1});
        }
        if (first) {
            keys_created = true;
            commands.push_back(set_meta(entry.meta_key, entry.json, file.type, file.mode));
            metas.push_back(Queued{commands.size() - 1, &file, index});
        }
        if (deadline.enabled() && (first || refresh)) {
            // A key that is gone answers 0: the series is sent again next pass.
            for (const std::string* key : {&entry.metric_key, &entry.meta_key}) {
                if (!first) renewed.push_back(Queued{commands.size(), &file, index, 1});
                commands.push_back(expire_at(*key, deadline));
            }
        } else if (verify && !first) {
            renewed.push_back(Queued{commands.size(), &file, index, 2});
            commands.push_back({"EXISTS", entry.metric_key, entry.meta_key});
        }
    }
};

Mirror::Mirror(std::shared_ptr<Client> client, MirrorOptions options)
    : client_(std::move(client)),
      options_(std::move(options)),
      state_(std::make_unique<State>(options_.ttl_seconds)) {
    options_.instance = sanitize_segment(options_.instance);
    state_->token = new_keyset_version();
    state_->marker_key = marker_key(options_.prefix, options_.instance,
                                    std::string_view(state_->token).substr(0, 16));
}

Mirror::~Mirror() = default;

PassReport Mirror::pass(Diagnostics& diagnostics) {
    State& s = *state_;
    const uint64_t epoch_before = client_->connection_epoch();
    Batch batch;
    batch.resend = epoch_before != s.epoch_sent;
    batch.refresh = s.deadline.due(batch.resend);
    if (batch.refresh) s.deadline.renew(*client_);
    // Without a TTL nothing renews (and so checks) the keys: every so often
    // each series' keys are asked for, so that a partial loss (eviction)
    // heals too.
    batch.verify = !s.deadline.enabled() && !batch.resend && Clock::now() >= s.next_verify;
    ++s.passes;
    batch.commands.push_back({"GET", s.marker_key});

    scan_changes(batch, diagnostics);
    queue_deletions(batch);
    if (batch.commands.size() == 2) return check_only(batch.resend, diagnostics);
    build_batch(batch);

    s.deletions = batch.deleting;  // kept until a pass gets them through
    const std::vector<Reply> replies = client_->pipeline(batch.commands);  // throws on failure
    const Reply& exec = replies.back();
    if (exec.is_error() || exec.type != Reply::Type::kArray ||
        exec.elements.size() + 2 != batch.commands.size()) {
        throw Error(Error::Kind::kServer,
                    "mirror transaction failed: " + transaction_error(batch.commands, replies));
    }
    // EXEC's replies: command i is exec.elements[i - 1].
    batch.lost = marker_lost(exec.elements[0], batch.resend, diagnostics);
    s.marker_written = batch.marker;
    apply_result(batch, exec, diagnostics);
    s.deletions.clear();
    settle(batch, epoch_before);

    const PassReport report{batch.sent.size(), batch.deleting.size(), batch.commands.size(),
                            batch.refresh};
    // Only the changes reached a new connection (a restarted Redis, another
    // master after a failover, which may lack writes acknowledged before):
    // everything at once, as when keys were lost.
    const bool reconnected = !batch.resend && client_->connection_epoch() != epoch_before;
    if (batch.lost || reconnected) return resend_now(report, diagnostics);
    return report;
}

void Mirror::scan_changes(Batch& batch, Diagnostics& diagnostics) {
    const DirectoryLock lock(options_.directory, DirectoryLock::Mode::kShared);
    for (const std::string& path : list_db_files(options_.directory)) {
        scan_file(path, batch, diagnostics);
    }
}

void Mirror::scan_file(const std::string& path, Batch& batch, Diagnostics& diagnostics) {
    State& s = *state_;
    const FileName name = parse_file_name(path);
    if (!name.valid) return;  // the reader warns about foreign files
    FileIdentity identity;
    try {
        identity = read_used_region(path, s.buffer);
    } catch (const std::system_error& e) {
        if (e.code().value() != ENOENT)
            diagnostics.warn(concat("mirror skipped ", path, ": ", e.what()));
        return;
    } catch (const FormatError& e) {
        diagnostics.warn(concat("mirror skipped corrupt file ", path, ": ", e.what()));
        return;
    }
    State::File& file = s.files[path];
    if (file.identity != identity) {
        file = State::File{identity, std::string(name.type), std::string(name.mode), {}, 0};
    }
    file.last_seen = s.passes;
    const std::string process = process_id(name.process, options_.instance);
    size_t index = 0;
    try {
        for_each_entry(s.buffer, [&](std::string_view key, double value, double timestamp) {
            if (index < file.entries.size() && file.entries[index].json != key) {
                file.entries.resize(index);  // a new file at a reused inode
            }
            if (index == file.entries.size()) {
                SeriesKeys keys = series_keys(options_.prefix, name.store, process, key);
                file.entries.push_back(State::Entry{std::move(keys.metric), std::move(keys.meta),
                                                    std::string(key), 0, 0, false});
            }
            batch.queue(file, index++, value, timestamp, s.deadline);
        });
    } catch (const FormatError& e) {
        diagnostics.warn(concat("mirror skipped corrupt file ", path, ": ", e.what()));
    }
}

void Mirror::queue_deletions(Batch& batch) {
    // Files gone since the last pass: their processes were archived.
    State& s = *state_;
    batch.deleting = s.deletions;
    std::erase_if(s.files, [&](const auto& item) {
        if (item.second.last_seen == s.passes) return false;
        for (const auto& entry : item.second.entries) {
            batch.deleting.push_back(entry.metric_key);
            batch.deleting.push_back(entry.meta_key);
        }
        return true;
    });
    for (size_t i = 0; i < batch.deleting.size(); i += kKeysPerDel) {
        Command del{"DEL"};
        const size_t end = std::min(batch.deleting.size(), i + kKeysPerDel);
        for (size_t j = i; j < end; ++j) del.push_back(batch.deleting[j]);
        batch.commands.push_back(std::move(del));
    }
}

void Mirror::build_batch(Batch& batch) {
    State& s = *state_;
    batch.marker = concat(s.token, ":", std::to_string(++s.marker_seq));
    batch.commands.push_back({"SET", s.marker_key, batch.marker});
    // The marker expires with the keys; without a TTL after a day, so that
    // the markers of mirrors gone do not pile up (a quiet mirror's marker
    // expiring costs one pass that sends everything).
    batch.commands.push_back(s.deadline.enabled()
                                 ? expire_at(s.marker_key, s.deadline)
                                 : Command{"PEXPIRE", s.marker_key, std::to_string(kMarkerTtlMs)});
    // Readers keep the key list while this version stays the same.
    if (batch.keys_created || !batch.deleting.empty()) {
        batch.commands.push_back(new_keyset(options_.prefix));
    }
    batch.commands.push_back({"EXEC"});
}

void Mirror::apply_result(const Batch& batch, const Reply& exec, Diagnostics& diagnostics) {
    State& s = *state_;
    // A write refused inside the transaction (a key of ours that a foreign
    // writer gave another type: WRONGTYPE) is named once and tried again
    // every pass.
    const auto refused = [&](size_t command, State::File* file, size_t index) {
        const Reply& reply = exec.elements[command - 1];
        const std::string& key = batch.commands[command][1];
        if (!reply.is_error()) {
            if (!s.warned.empty()) s.warned.erase(key);
            return;
        }
        file->entries[index].sent = false;
        if (s.warned.try_emplace(key, true).second) {
            diagnostics.warn(concat("mirror skipped Redis key ", key, ": ", reply.str,
                                    " (will try again every pass)"));
        }
    };
    for (const Batch::Sent& item : batch.sent) {
        State::Entry& entry = item.file->entries[item.index];
        entry.value = item.value;
        entry.timestamp = item.timestamp;
        entry.sent = true;
    }
    for (const Batch::Sent& item : batch.sent) refused(item.command, item.file, item.index);
    for (const Batch::Queued& item : batch.metas) refused(item.command, item.file, item.index);
    for (const Batch::Queued& item : batch.renewed) {
        const Reply& reply = exec.elements[item.command - 1];
        if (reply.type == Reply::Type::kInteger && reply.integer < item.expected) {
            item.file->entries[item.index].sent = false;
        }
    }
}

bool Mirror::marker_lost(const Reply& found, bool resend, Diagnostics& diagnostics) {
    // A marker value is ours if this Mirror wrote it last; anything else
    // (nothing, an older value, another writer's) means keys may be missing.
    State& s = *state_;
    if (resend || s.marker_written.empty()) return false;
    if (found.type == Reply::Type::kString && found.str == s.marker_written) return false;
    s.epoch_sent = UINT64_MAX;  // the next pass sends everything
    diagnostics.warn(concat("Redis lost keys of this instance (its marker ", s.marker_key, " is ",
                            found.type == Reply::Type::kString ? "an older value"
                            : found.is_error()                 ? found.str
                                                               : std::string("gone"),
                            "; FLUSHALL, eviction or a failover?): sending everything again"));
    return true;
}

PassReport Mirror::check_only(bool resend, Diagnostics& diagnostics) {
    const Reply found =
        client_->pipeline({{"GET", state_->marker_key}}).front();  // throws on failure
    if (found.is_error() && !found.str.starts_with("WRONGTYPE"))
        throw Error(Error::Kind::kServer, "mirror check failed: " + found.str);
    PassReport report;
    report.commands = 1;
    if (marker_lost(found, resend, diagnostics)) return resend_now(report, diagnostics);
    return report;
}

void Mirror::settle(const Batch& batch, uint64_t epoch_before) {
    State& s = *state_;
    const uint64_t epoch_after = client_->connection_epoch();
    if (batch.lost || (epoch_after != epoch_before && !batch.resend)) return;
    // This pass reached Redis on a connection that already had everything.
    s.epoch_sent = epoch_after;
    if (batch.refresh) s.deadline.confirm();
    if (batch.verify || batch.resend) {
        s.next_verify = Clock::now() + std::chrono::milliseconds(
                                           static_cast<long long>(options_.verify_seconds * 1000));
    }
}

PassReport Mirror::resend_now(const PassReport& check, Diagnostics& diagnostics) {
    // At once, not a flush interval later: the check's pass is one
    // transaction, everything sent is another (which checks nothing: depth 1).
    PassReport report = pass(diagnostics);
    report.written += check.written;
    report.deleted += check.deleted;
    report.commands += check.commands;
    report.refreshed = report.refreshed || check.refreshed;
    return report;
}

}  // namespace gpe::redis
