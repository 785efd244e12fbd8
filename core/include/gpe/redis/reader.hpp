// Reads every series under a key prefix from Redis and merges them exactly
// as prometheus_client's MultiProcessCollector merges files: SCAN for the
// metric keys, one pipelined HMGET each, the series key (JSON) from the meta
// key only the first time a hash is seen. Keys that are not of our layout
// are skipped and named in a warning.
#pragma once

#include <memory>
#include <string>

#include "gpe/redis/client.hpp"
#include "gpe/source.hpp"

namespace gpe::redis {

struct ReadStats {
    size_t commands = 0;  // Redis commands of the last scrape
    size_t keys = 0;      // metric keys read
    int attempts = 0;     // reads of the last scrape (more than one if a fold interleaved)
};

class Reader final : public Source {
  public:
    Reader(std::shared_ptr<Client> client, std::string prefix);
    ~Reader() override;
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;

    // Throws Error when Redis cannot be read (render() too).
    Collected collect(bool accumulate = true) override;
    ReadStats last_stats() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gpe::redis
