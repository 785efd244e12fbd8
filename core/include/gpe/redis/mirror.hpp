// Mirrors a multiprocess directory into Redis: the instance layout's
// publisher is view_mirror.hpp; this file's Mirror keeps the seed's series
// layout.
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

#include <memory>
#include <string>

#include "gpe/merge.hpp"
#include "gpe/redis/client.hpp"
#include "gpe/redis/layout.hpp"

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
    Layout layout = Layout::instance;  // what make_publisher() makes
};

struct PassReport {
    size_t written = 0;  // values sent
    size_t deleted = 0;  // keys deleted (vanished files)
    size_t commands = 0;
    bool refreshed = false;  // expiry deadline renewed
};

// What a mirror service runs: a pass of one of the two layouts.
class Publisher {
  public:
    virtual ~Publisher() = default;
    // One pass. Throws Error when Redis fails; what was not sent is sent by
    // a later pass.
    virtual PassReport pass(Diagnostics& diagnostics) = 0;
    // The instance leaves for good (its directory goes with it): a last
    // pass, then its node is folded into the fleet archive (instance
    // layout; the series layout's keys expire). Throws Error.
    virtual void retire(Diagnostics& diagnostics) = 0;
    virtual const MirrorOptions& options() const = 0;
};

// The publisher of options.layout.
std::unique_ptr<Publisher> make_publisher(std::shared_ptr<Client> client, MirrorOptions options);

// The series layout: every process's series as keys of their own.
class Mirror final : public Publisher {
  public:
    Mirror(std::shared_ptr<Client> client, MirrorOptions options);
    ~Mirror() override;
    Mirror(const Mirror&) = delete;
    Mirror& operator=(const Mirror&) = delete;

    PassReport pass(Diagnostics& diagnostics) override;
    void retire(Diagnostics& diagnostics) override { pass(diagnostics); }
    const MirrorOptions& options() const override { return options_; }

  private:
    struct State;
    struct Batch;  // one pass's commands, and what each of them sends

    // The three steps of a pass: what changed, the transaction that sends
    // it, and what its replies say (refused writes, keys found gone).
    void scan_changes(Batch& batch, Diagnostics& diagnostics);
    void scan_file(const std::string& path, Batch& batch, Diagnostics& diagnostics);
    void queue_deletions(Batch& batch);
    void build_batch(Batch& batch);
    void apply_result(const Batch& batch, const Reply& exec, Diagnostics& diagnostics);
    // Whether the marker read back says Redis lost our keys (then the next
    // pass sends everything).
    bool marker_lost(const Reply& found, bool resend, Diagnostics& diagnostics);
    // A pass with nothing to write: only the marker check.
    PassReport check_only(bool resend, Diagnostics& diagnostics);
    // The pass reached Redis: when to renew and verify next.
    void settle(const Batch& batch, uint64_t epoch_before);
    // After a pass found Redis lost our keys, or reached a new connection
    // with only the changes: a pass that sends everything.
    PassReport resend_now(const PassReport& check, Diagnostics& diagnostics);

    std::shared_ptr<Client> client_;
    MirrorOptions options_;
    std::unique_ptr<State> state_;
};

}  // namespace gpe::redis
