// The per-request and per-worker metrics of a Gunicorn worker, updated by the
// core directly: a request is one call (record), resource gauges are
// refreshed by a thread of the core (ResourceSampler), so idle workers are
// current too.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "gpe/value_store.hpp"

namespace gpe {

// A histogram child's values: buckets (non-cumulative, as in the files) and sum.
struct HistogramValues {
    std::vector<double> bounds;
    std::vector<Value*> buckets;  // one per bound
    Value* sum = nullptr;

    void observe(double amount) const;
};

// Request metrics by method (a fixed list: anything else counts as the last
// one, "other") and status class (1xx..5xx; anything else counts as 5xx).
class RequestRecorder {
  public:
    static constexpr int kStatusClasses = 5;

    struct Method {
        std::string name;
        Value* requests[kStatusClasses];
        Value* failed;
        HistogramValues duration;
    };

    RequestRecorder(std::vector<Method> methods, HistogramValues request_size,
                    HistogramValues response_size);

    // `failed`: the application raised, or the status is 5xx.
    void record(std::string_view method, int status, double duration_seconds, double request_bytes,
                double response_bytes, bool failed) const;

    static int status_class(int status);

  private:
    const Method& method(std::string_view name) const;

    std::vector<Method> methods_;
    HistogramValues request_size_;
    HistogramValues response_size_;
};

// Gauges of this process refreshed every `interval` on a thread of its own.
struct ResourceValues {
    Value* memory_bytes = nullptr;
    Value* cpu_percent = nullptr;
    Value* open_fds = nullptr;
    Value* threads = nullptr;
    Value* uptime_seconds = nullptr;
};

class ResourceSampler {
  public:
    ResourceSampler(ResourceValues values, double interval_seconds);
    ~ResourceSampler();
    ResourceSampler(const ResourceSampler&) = delete;
    ResourceSampler& operator=(const ResourceSampler&) = delete;

    void sample();  // once, now
    void stop();

  private:
    void run();

    ResourceValues values_;
    std::chrono::duration<double> interval_;
    double last_cpu_ = -1;
    std::chrono::steady_clock::time_point last_time_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace gpe
