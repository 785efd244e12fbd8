// Runs mirror passes (mirror.hpp) on a thread of its own, in the one process
// per directory that holds the mirror lock ({directory}/.gpe-mirror.lock):
// whichever process of an instance runs it, exactly one mirrors, and another
// takes over when it dies.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gpe/mmap_file.hpp"  // FileDescriptor
#include "gpe/redis/mirror.hpp"

namespace gpe::redis {

// The mirror lock of a directory, held while this object lives (an flock on
// an open file: a dead holder's lock is released by the kernel).
class LeaderLock {
  public:
    // The lock, or nullopt when another process holds it.
    static std::optional<LeaderLock> try_acquire(const std::string& directory);

  private:
    explicit LeaderLock(FileDescriptor fd) : fd_(std::move(fd)) {}
    FileDescriptor fd_;  // closing it releases the lock
};

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
    // Stops the thread; a leader makes a last pass first, and retires the
    // instance (view_mirror.hpp) when its directory holds kRetireFile (the
    // master leaves and its directory with it).
    void stop();
    static constexpr const char* kRetireFile = ".gpe-retire";
    // A pass now, in this thread, if this process is (or can become) the
    // leader; false if another process leads. Throws Error if Redis fails.
    bool pass_now();
    bool is_leader() const;
    // In a forked child: forget the parent's thread, lock and connection.
    void after_fork_in_child();

  private:
    using Messages = std::vector<std::pair<int, std::string>>;
    bool try_lead();                     // mutex held
    void run_pass(Messages& messages);   // mutex held
    void last_pass(Messages& messages);  // mutex held
    void run();
    void log(const Messages& messages);  // mutex not held: the logger may wait for the GIL

    std::shared_ptr<Client> client_;
    std::unique_ptr<Publisher> mirror_;
    std::chrono::duration<double> interval_;
    Logger logger_;
    // A pointer so that a forked child can drop a copy that a thread of the
    // parent may hold locked.
    std::unique_ptr<std::mutex> mutex_ = std::make_unique<std::mutex>();
    std::unique_ptr<std::condition_variable_any> wake_ =
        std::make_unique<std::condition_variable_any>();
    bool stopping_ = false;
    std::unique_ptr<std::thread> thread_;
    std::optional<LeaderLock> lock_;
    bool failing_ = false;
};

}  // namespace gpe::redis
