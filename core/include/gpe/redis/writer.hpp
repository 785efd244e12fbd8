// The write protocol of the key layout (layout.hpp), in one place for the
// mirror and the direct path (RedisStorageDict): which commands write a
// series' value and meta keys, and the expiry deadline its keys share.
//
// The deadline is absolute (PEXPIREAT), the server's clock plus the TTL, and
// renewed every third of the TTL: every key a writer touches in between gets
// the same deadline, so that keys expire together, never a histogram in part.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gpe/redis/client.hpp"
#include "gpe/redis/layout.hpp"

namespace gpe::redis {

class Deadline {
  public:
    explicit Deadline(int ttl_seconds) : ttl_seconds_(ttl_seconds) {}

    // With a TTL of 0 keys never expire and nothing here is used.
    bool enabled() const { return ttl_seconds_ > 0; }
    // Whether the next write renews: `force`d, never renewed, or a third of
    // the TTL since the last renewal reached Redis.
    bool due(bool force) const;
    // A new deadline: the server's time plus the TTL.
    void renew(Client& client);
    // The renewed deadline reached Redis: the next renewal is due a third of
    // the TTL from now.
    void confirm();
    // Unix milliseconds, as PEXPIREAT takes them.
    const std::string& text() const { return text_; }

  private:
    using Clock = std::chrono::steady_clock;
    int ttl_seconds_;
    std::string text_;
    Clock::time_point next_renewal_{};
};

// The commands that write one series.
Command set_value(const std::string& metric_key, double value, double timestamp);
Command set_meta(const std::string& meta_key, std::string_view original_key, std::string_view typ,
                 std::string_view mode);
Command expire_at(const std::string& key, const Deadline& deadline);
// Replaces the key set version: after creating or deleting keys.
Command new_keyset(std::string_view prefix);

// The direct path: one series written and read at once, with the deadline
// semantics of the mirror.
class SeriesWriter {
  public:
    SeriesWriter(std::shared_ptr<Client> client, std::string prefix, int ttl_seconds);

    // Writes the value and meta key of `series_key` in `store` of `process`
    // (and renews their deadline); a new series also replaces the key set
    // version. Returns a warning for each write Redis refused (a key of
    // another type); throws Error when Redis fails.
    std::vector<std::string> write(std::string_view store, std::string_view process,
                                   std::string_view series_key, std::string_view typ,
                                   std::string_view mode, double value, double timestamp);
    // (value, timestamp) of a series; nullopt when it has no value.
    std::optional<std::pair<double, double>> read(std::string_view store, std::string_view process,
                                                  std::string_view series_key);

    const Deadline& deadline() const { return deadline_; }

  private:
    std::shared_ptr<Client> client_;
    std::string prefix_;
    Deadline deadline_;
};

}  // namespace gpe::redis
