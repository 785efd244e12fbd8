#include "gpe/redis/mirror_service.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>

namespace gpe::redis {

std::optional<LeaderLock> LeaderLock::try_acquire(const std::string& directory) {
    const std::string path = directory + "/.gpe-mirror.lock";
    FileDescriptor fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (fd.get() < 0 || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return std::nullopt;
    return LeaderLock(std::move(fd));
}

MirrorService::MirrorService(std::shared_ptr<Client> client, MirrorOptions options,
                             double interval_seconds, Logger logger)
    : client_(client),
      mirror_(make_publisher(std::move(client), std::move(options))),
      // Deadlines are renewed every third of the TTL: passes must come at least that often.
      interval_(mirror_->options().ttl_seconds > 0
                    ? std::min(interval_seconds, mirror_->options().ttl_seconds / 3.0)
                    : interval_seconds),
      logger_(std::move(logger)) {}

MirrorService::~MirrorService() { stop(); }

void MirrorService::log(const Messages& messages) {
    if (!logger_) return;
    for (const auto& [level, message] : messages) logger_(level, message);
}

bool MirrorService::try_lead() {
    if (!lock_) lock_ = LeaderLock::try_acquire(mirror_->options().directory);
    return lock_.has_value();
}

bool MirrorService::is_leader() const {
    std::lock_guard lock(*mutex_);
    return lock_.has_value();
}

bool MirrorService::pass_now() {
    Messages messages;
    {
        std::lock_guard lock(*mutex_);
        if (!try_lead()) return false;
        Diagnostics diagnostics;
        mirror_->pass(diagnostics);  // throws Error for the caller
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
        const PassReport report = mirror_->pass(diagnostics);
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

void MirrorService::last_pass(Messages& messages) {
    const std::string retire_file = mirror_->options().directory + "/" + kRetireFile;
    if (::access(retire_file.c_str(), F_OK) != 0) return run_pass(messages);
    Diagnostics diagnostics;
    try {
        mirror_->retire(diagnostics);
        messages.emplace_back(kInfo, "this instance left: its counts went into the fleet archive");
    } catch (const std::exception& e) {
        messages.emplace_back(kWarning,
                              std::string("cannot fold this instance into the fleet archive (an "
                                          "agent will once its TTL passes): ") +
                                  e.what());
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
    if (lock_) last_pass(messages);
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
    // The thread was in a pass if it held the mutex: the mirror's state may
    // be half changed, and destroying it could corrupt the heap. It is let go
    // (leaked) for a fresh one, which sends everything should this child lead.
    const bool mid_pass = !mutex_->try_lock();
    if (!mid_pass) mutex_->unlock();
    if (mid_pass) {
        MirrorOptions options = mirror_->options();  // set once, never changed by a pass
        (void)mirror_.release();
        mirror_ = make_publisher(client_, std::move(options));
    }
    (void)mutex_.release();
    mutex_ = std::make_unique<std::mutex>();
    (void)wake_.release();
    wake_ = std::make_unique<std::condition_variable_any>();
    // Closing our copy of the lock descriptor leaves the parent's lock alone.
    lock_.reset();
    failing_ = false;
    client_->reset_after_fork();
}

}  // namespace gpe::redis
