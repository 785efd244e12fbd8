// Mirrors a multiprocess directory into Redis with the seed's key layout.
//
// Values are written by the request path into memory-mapped files only; a
// mirror pass sends what changed since the last successful pass, in one
// MULTI/EXEC transaction (so readers never see half a pass, e.g. an archive
// that already holds a dead worker's counts while its own keys still exist).
// Files that disappeared (archived dead processes) have their keys deleted.
// All keys of an instance share one expiry deadline, renewed every third of
// the TTL: a live process's series never expire, and a dead instance's
// series expire together, never a histogram in part. After a reconnect
// everything is sent again, so a restarted Redis is refilled and nothing
// counted during an outage is lost.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gpe/merge.hpp"
#include "gpe/redis/client.hpp"

namespace gpe::redis {

struct MirrorOptions {
    std::string directory;
    std::string prefix = "gunicorn";
    std::string instance;   // identifies this host or pod
    int ttl_seconds = 300;  // 0: keys never expire
    // With ttl_seconds 0: how often every series' keys are checked (with a
    // TTL they are checked when renewed, every third of it); a series whose
    // keys are gone (evicted) is sent again.
    double verify_seconds = 100;
};

struct PassReport {
    size_t written = 0;  // values sent
    size_t deleted = 0;  // keys deleted (vanished files)
    size_t commands = 0;
    bool refreshed = false;  // expiry deadline renewed
};

class Mirror {
  public:
    Mirror(std::shared_ptr<Client> client, MirrorOptions options);
    ~Mirror();
    Mirror(const Mirror&) = delete;
    Mirror& operator=(const Mirror&) = delete;

    // One pass. Throws Error when Redis fails; what was not sent is sent by
    // a later pass.
    PassReport pass(Diagnostics& diagnostics);

    const MirrorOptions& options() const { return options_; }

  private:
    // After a pass found Redis lost our keys: a pass that sends everything.
    PassReport resend_now(const PassReport& check, Diagnostics& diagnostics);

    struct State;
    std::shared_ptr<Client> client_;
    MirrorOptions options_;
    std::unique_ptr<State> state_;
};

// Runs mirror passes every `interval` on a thread of its own, in the one
// process per directory that holds the mirror lock ({directory}/.gpe-mirror
// .lock): whichever process of an instance runs it, exactly one mirrors, and
// another takes over when it dies.
class MirrorService {
  public:
    using Logger = std::function<void(int level, const std::string& message)>;
    static constexpr int kInfo = 20;
    static constexpr int kWarning = 30;

    MirrorService(std::shared_ptr<Client> client, MirrorOptions options, double interval_seconds,
                  Logger logger);
    ~MirrorService();
    MirrorService(const MirrorService&) = delete;
    MirrorService& operator=(const MirrorService&) = delete;

    void start();
    // Stops the thread; a leader makes a last pass first.
    void stop();
    // A pass now, in this thread, if this process is (or can become) the
    // leader; false if another process leads. Throws Error if Redis fails.
    bool pass_now();
    bool is_leader() const;
    // In a forked child: forget the parent's thread, lock and connection.
    void after_fork_in_child();

  private:
    using Messages = std::vector<std::pair<int, std::string>>;
    bool try_lead();                    // mutex held
    void run_pass(Messages& messages);  // mutex held
    void run();
    void log(const Messages& messages);  // mutex not held: the logger may wait for the GIL

    std::shared_ptr<Client> client_;
    Mirror mirror_;
    std::chrono::duration<double> interval_;
    Logger logger_;
    // A pointer so that a forked child can drop a copy that a thread of the
    // parent may hold locked.
    std::unique_ptr<std::mutex> mutex_ = std::make_unique<std::mutex>();
    std::unique_ptr<std::condition_variable_any> wake_ =
        std::make_unique<std::condition_variable_any>();
    bool stopping_ = false;
    std::unique_ptr<std::thread> thread_;
    int lock_fd_ = -1;
    bool failing_ = false;
};

}  // namespace gpe::redis
