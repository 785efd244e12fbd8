#include "gpe/redis/mirror.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstring>
#include <system_error>

#include "gpe/multiprocess.hpp"
#include "gpe/redis/layout.hpp"
#include "gpe/strings.hpp"

namespace gpe::redis {

namespace {

using Clock = std::chrono::steady_clock;

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

constexpr long long kMarkerTtlMs = 24LL * 3600 * 1000;

}  // namespace

struct Mirror::State {
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
    Clock::time_point next_refresh{};
    Clock::time_point next_verify{};  // TTL 0: when to check that every key still exists
    long long deadline = 0;           // unix milliseconds at which this instance's keys expire
    std::string buffer;
};

Mirror::Mirror(std::shared_ptr<Client> client, MirrorOptions options)
    : client_(std::move(client)), options_(std::move(options)), state_(std::make_unique<State>()) {
    options_.instance = sanitize_segment(options_.instance);
    state_->token = new_keyset_version();
    state_->marker_key = marker_key(options_.prefix, options_.instance,
                                    std::string_view(state_->token).substr(0, 16));
}

namespace {

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

Mirror::~Mirror() = default;

PassReport Mirror::pass(Diagnostics& diagnostics) {
    State& s = *state_;
    PassReport report;
    const uint64_t epoch_before = client_->connection_epoch();
    const bool resend = epoch_before != s.epoch_sent;
    const bool ttl = options_.ttl_seconds > 0;
    const bool refresh = ttl && (resend || Clock::now() >= s.next_refresh);
    if (refresh) {
        s.deadline =
            static_cast<long long>(client_->server_time() * 1000) + options_.ttl_seconds * 1000LL;
    }
    const std::string deadline = std::to_string(s.deadline);
    // Without a TTL nothing renews (and so checks) the keys: every so often
    // each series' keys are asked for, so that a partial loss (eviction)
    // heals too.
    const bool verify = !ttl && !resend && Clock::now() >= s.next_verify;
    ++s.passes;

    std::vector<Command> commands;
    commands.push_back({"MULTI"});
    commands.push_back({"GET", s.marker_key});
    // Entries are found again by file and index after the transaction: the
    // entry vectors may grow (and move) while the pass reads later entries.
    struct Sent {
        State::File* file;
        size_t index;
        double value;
        double timestamp;
        size_t command;  // of the HSET
    };
    // HSETs of meta keys, whose failure (a key of another type) must be seen.
    struct MetaSent {
        size_t command;
        State::File* file;
        size_t index;
    };
    std::vector<MetaSent> metas;
    bool keys_created = false;
    // PEXPIREAT of meta keys in a refresh: a series whose keys are gone
    // (expired while the mirror stalled) is sent again next pass.
    struct Refreshed {
        size_t command;
        State::File* file;
        size_t index;
        long long expected;  // the least integer reply while the keys are there
    };
    std::vector<Refreshed> refreshed;
    std::vector<Sent> sent;
    {
        const DirectoryLock lock(options_.directory, DirectoryLock::Mode::kShared);
        for (const std::string& path : list_db_files(options_.directory)) {
            const FileName name = parse_file_name(path);
            if (!name.valid) continue;  // the reader warns about foreign files
            FileIdentity identity;
            try {
                identity = read_used_region(path, s.buffer);
            } catch (const std::system_error& e) {
                if (e.code().value() != ENOENT)
                    diagnostics.warn(concat("mirror skipped ", path, ": ", e.what()));
                continue;
            } catch (const FormatError& e) {
                diagnostics.warn(concat("mirror skipped corrupt file ", path, ": ", e.what()));
                continue;
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
                        const std::string hash = series_hash(key);
                        file.entries.push_back(State::Entry{
                            make_key(options_.prefix, name.store, process, kMetric, hash),
                            make_key(options_.prefix, name.store, process, kMeta, hash),
                            std::string(key), 0, 0, false});
                    }
                    State::Entry& entry = file.entries[index++];
                    const bool first = resend || !entry.sent;
                    if (first || !same_bits(value, entry.value) ||
                        !same_bits(timestamp, entry.timestamp)) {
                        commands.push_back({"HSET", entry.metric_key, "value", format_value(value),
                                            "timestamp", format_value(timestamp)});
                        sent.push_back(
                            Sent{&file, index - 1, value, timestamp, commands.size() - 1});
                    }
                    if (first) {
                        keys_created = true;
                        commands.push_back({"HSET", entry.meta_key, "original_key", entry.json,
                                            "typ", file.type, "multiprocess_mode", file.mode});
                        metas.push_back(MetaSent{commands.size() - 1, &file, index - 1});
                    }
                    if (ttl && (first || refresh)) {
                        // A key that is gone (expired while the mirror stalled, evicted)
                        // answers 0: the series is sent again next pass.
                        if (!first)
                            refreshed.push_back(Refreshed{commands.size(), &file, index - 1, 1});
                        commands.push_back({"PEXPIREAT", entry.metric_key, deadline});
                        if (!first)
                            refreshed.push_back(Refreshed{commands.size(), &file, index - 1, 1});
                        commands.push_back({"PEXPIREAT", entry.meta_key, deadline});
                    } else if (verify && !first) {
                        refreshed.push_back(Refreshed{commands.size(), &file, index - 1, 2});
                        commands.push_back({"EXISTS", entry.metric_key, entry.meta_key});
                    }
                });
            } catch (const FormatError& e) {
                diagnostics.warn(concat("mirror skipped corrupt file ", path, ": ", e.what()));
            }
        }
    }
    // Files gone since the last pass: their processes were archived.
    std::vector<std::string> deleting = s.deletions;
    std::erase_if(s.files, [&](const auto& item) {
        if (item.second.last_seen == s.passes) return false;
        for (const auto& entry : item.second.entries) {
            deleting.push_back(entry.metric_key);
            deleting.push_back(entry.meta_key);
        }
        return true;
    });
    for (size_t i = 0; i < deleting.size(); i += 512) {
        Command del{"DEL"};
        for (size_t j = i; j < std::min(deleting.size(), i + 512); ++j) del.push_back(deleting[j]);
        commands.push_back(std::move(del));
    }
    // A marker value is ours if this Mirror wrote it last; anything else
    // (nothing, an older value, another writer's) means keys may be missing.
    bool lost = false;
    const auto check_marker = [&](const Reply& found) {
        if (resend || s.marker_written.empty()) return;
        if (found.type == Reply::Type::kString && found.str == s.marker_written) return;
        lost = true;
        s.epoch_sent = UINT64_MAX;  // the next pass sends everything
        diagnostics.warn(concat("Redis lost keys of this instance (its marker ", s.marker_key,
                                " is ",
                                found.type == Reply::Type::kString ? "an older value"
                                : found.is_error()                 ? found.str
                                                                   : std::string("gone"),
                                "; FLUSHALL, eviction or a failover?): sending everything again"));
    };
    if (commands.size() == 2) {  // nothing to write: only the check
        const Reply found =
            client_->pipeline({{"GET", s.marker_key}}).front();  // throws on failure
        if (found.is_error() && !found.str.starts_with("WRONGTYPE"))
            throw Error(Error::Kind::kServer, "mirror check failed: " + found.str);
        check_marker(found);
        report.commands = 1;
        if (lost) return resend_now(report, diagnostics);
        return report;
    }
    const std::string marker = concat(s.token, ":", std::to_string(++s.marker_seq));
    commands.push_back({"SET", s.marker_key, marker});
    // The marker expires with the keys; without a TTL after a day, so that
    // the markers of mirrors gone do not pile up (a quiet mirror's marker
    // expiring costs one pass that sends everything).
    commands.push_back(ttl ? Command{"PEXPIREAT", s.marker_key, deadline}
                           : Command{"PEXPIRE", s.marker_key, std::to_string(kMarkerTtlMs)});
    // Readers keep the key list while this version stays the same.
    if (keys_created || !deleting.empty()) {
        commands.push_back({"SET", keyset_key(options_.prefix), new_keyset_version()});
    }
    commands.push_back({"EXEC"});

    s.deletions = deleting;  // kept until a pass gets them through
    const std::vector<Reply> replies = client_->pipeline(commands);  // throws on failure
    const Reply& exec = replies.back();
    if (exec.is_error() || exec.type != Reply::Type::kArray ||
        exec.elements.size() + 2 != commands.size()) {
        throw Error(Error::Kind::kServer,
                    "mirror transaction failed: " + transaction_error(commands, replies));
    }
    check_marker(exec.elements[0]);  // EXEC's replies: command i is exec.elements[i - 1]
    s.marker_written = marker;
    // A write refused inside the transaction (a key of ours that a foreign
    // writer gave another type: WRONGTYPE) is named once and tried again
    // every pass.
    const auto refused = [&](size_t command, State::File* file, size_t index) {
        const Reply& reply = exec.elements[command - 1];
        if (!reply.is_error()) {
            if (!s.warned.empty()) s.warned.erase(commands[command][1]);
            return false;
        }
        file->entries[index].sent = false;
        if (s.warned.try_emplace(commands[command][1], true).second) {
            diagnostics.warn(concat("mirror skipped Redis key ", commands[command][1], ": ",
                                    reply.str, " (will try again every pass)"));
        }
        return true;
    };
    for (const Sent& item : sent) {
        State::Entry& entry = item.file->entries[item.index];
        entry.value = item.value;
        entry.timestamp = item.timestamp;
        entry.sent = true;
    }
    for (const Sent& item : sent) refused(item.command, item.file, item.index);
    for (const MetaSent& item : metas) refused(item.command, item.file, item.index);
    for (const Refreshed& item : refreshed) {
        const Reply& reply = exec.elements[item.command - 1];
        if (reply.type == Reply::Type::kInteger && reply.integer < item.expected) {
            item.file->entries[item.index].sent = false;
        }
    }
    s.deletions.clear();
    report.written = sent.size();
    report.deleted = deleting.size();
    report.commands = commands.size();
    report.refreshed = refresh;
    const uint64_t epoch_after = client_->connection_epoch();
    if (!lost && (epoch_after == epoch_before || resend)) {
        // This pass reached Redis on a connection that already had everything.
        s.epoch_sent = epoch_after;
        if (refresh) {
            s.next_refresh =
                Clock::now() + std::chrono::milliseconds(options_.ttl_seconds * 1000 / 3);
        }
        if (verify || resend) {
            s.next_verify =
                Clock::now() +
                std::chrono::milliseconds(static_cast<long long>(options_.verify_seconds * 1000));
        }
    }
    if (lost) return resend_now(report, diagnostics);
    return report;
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

// ---- service ----

MirrorService::MirrorService(std::shared_ptr<Client> client, MirrorOptions options,
                             double interval_seconds, Logger logger)
    : client_(client),
      mirror_(std::move(client), std::move(options)),
      // Deadlines are renewed every third of the TTL: passes must come at least that often.
      interval_(mirror_.options().ttl_seconds > 0
                    ? std::min(interval_seconds, mirror_.options().ttl_seconds / 3.0)
                    : interval_seconds),
      logger_(std::move(logger)) {}

MirrorService::~MirrorService() {
    stop();
    if (lock_fd_ >= 0) ::close(lock_fd_);
}

void MirrorService::log(const Messages& messages) {
    if (!logger_) return;
    for (const auto& [level, message] : messages) logger_(level, message);
}

bool MirrorService::try_lead() {
    if (lock_fd_ >= 0) return true;
    const std::string path = mirror_.options().directory + "/.gpe-mirror.lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return false;
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);
        return false;
    }
    lock_fd_ = fd;
    return true;
}

bool MirrorService::is_leader() const {
    std::lock_guard lock(*mutex_);
    return lock_fd_ >= 0;
}

bool MirrorService::pass_now() {
    Messages messages;
    {
        std::lock_guard lock(*mutex_);
        if (!try_lead()) return false;
        Diagnostics diagnostics;
        mirror_.pass(diagnostics);  // throws Error for the caller
        for (auto& warning : diagnostics.warnings)
            messages.emplace_back(kWarning, std::move(warning));
    }
    log(messages);
    return true;
}

void MirrorService::start() {
    std::lock_guard lock(*mutex_);
    if (thread_) return;
    // Lead now if nobody does, so that a process that starts the service and
    // then forks stays the leader rather than whichever child wakes first.
    try_lead();
    stopping_ = false;
    thread_ = std::make_unique<std::thread>([this] { run(); });
}

void MirrorService::run_pass(Messages& messages) {
    Diagnostics diagnostics;
    try {
        const PassReport report = mirror_.pass(diagnostics);
        if (failing_) {
            failing_ = false;
            messages.emplace_back(kInfo, "Redis reachable again at " +
                                             describe(client_->options()) + "; sent " +
                                             std::to_string(report.written) + " values");
        }
    } catch (const std::exception& e) {
        if (!failing_) {
            failing_ = true;
            messages.emplace_back(
                kWarning,
                std::string("cannot mirror metrics to Redis (will retry; nothing is lost): ") +
                    e.what());
        }
    }
    for (auto& warning : diagnostics.warnings) messages.emplace_back(kWarning, std::move(warning));
}

void MirrorService::run() {
    std::unique_lock lock(*mutex_);
    while (!stopping_) {
        Messages messages;
        if (try_lead()) run_pass(messages);
        lock.unlock();
        log(messages);
        lock.lock();
        wake_->wait_for(lock, interval_, [this] { return stopping_; });
    }
    // A last pass on the way out, so that the values of the final moments arrive.
    Messages messages;
    if (lock_fd_ >= 0) run_pass(messages);
    lock.unlock();
    log(messages);
}

void MirrorService::stop() {
    std::unique_ptr<std::thread> thread;
    {
        std::lock_guard lock(*mutex_);
        stopping_ = true;
        thread = std::move(thread_);
    }
    wake_->notify_all();
    if (thread && thread->joinable()) thread->join();
}

void MirrorService::after_fork_in_child() {
    // The thread does not exist in the child; its std::thread object must not
    // be joined or destroyed (that would terminate), so it is leaked on
    // purpose, as is a mutex it may have held.
    (void)thread_.release();
    (void)mutex_.release();
    mutex_ = std::make_unique<std::mutex>();
    (void)wake_.release();
    wake_ = std::make_unique<std::condition_variable_any>();
    // Closing our copy of the lock descriptor leaves the parent's lock alone.
    if (lock_fd_ >= 0) ::close(lock_fd_);
    lock_fd_ = -1;
    failing_ = false;
    client_->reset_after_fork();
}

}  // namespace gpe::redis
