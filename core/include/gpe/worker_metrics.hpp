// The per-request and per-worker metrics of a Gunicorn worker, updated by the
// core directly: a request is one call (record), resource gauges are
// refreshed by a thread of the core (ResourceSampler), so idle workers are
// current too.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "gpe/exemplar.hpp"
#include "gpe/value_store.hpp"

namespace gpe {

// A histogram child's values: buckets (non-cumulative, as in the files) and sum.
struct HistogramValues {
    std::vector<double> bounds;
    std::vector<Value*> buckets;  // one per bound
    Value* sum = nullptr;

    // `exemplar` (optional) becomes the exemplar of the bucket observed.
    void observe(double amount, const ExemplarLabels* exemplar = nullptr) const;
};

// The in-flight and busy gauges of this process (either may be null): busy
// is 1 while at least one request is in flight.
struct RequestSaturation {
    Value* in_flight = nullptr;
    Value* busy = nullptr;
};

// Request metrics by method (a fixed list: anything else counts as the last
// one, "other") and status: its class (1xx..5xx; anything else counts as
// 5xx) or, with a `by_code` factory, the exact code (100..599, anything else
// "other"), whose series are made at their first request.
class RequestRecorder {
  public:
    static constexpr int kStatusClasses = 5;
    static constexpr int kFirstCode = 100;
    static constexpr int kCodes = 501;  // 100..599, then "other"

    struct Method {
        std::string name;
        Value* requests[kStatusClasses];
        Value* failed;
        HistogramValues duration;
    };

    // The requests counter of (method index, status label), made on first use.
    using CodeFactory = std::function<Value*(size_t method, const std::string& status)>;

    RequestRecorder(std::vector<Method> methods, HistogramValues request_size,
                    HistogramValues response_size, RequestSaturation saturation = {},
                    CodeFactory by_code = nullptr);

    // A request started: in flight until its record().
    void start();
    // A request ended, after its start() (the in-flight count never goes
    // below 0). `failed`: the application raised, or the status is 5xx.
    // `exemplar` (optional, e.g. the trace of the request) goes on the
    // duration bucket.
    void record(std::string_view method, int status, double duration_seconds, double request_bytes,
                double response_bytes, bool failed, const ExemplarLabels* exemplar = nullptr);

    static int status_class(int status);
    // The label of `status` with exact codes: "100".."599", else "other".
    static std::string status_code_label(int status);
    long in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

  private:
    size_t method_index(std::string_view name) const;
    Value* requests_counter(size_t method, int status);
    void end_request();
    void update_busy();

    std::vector<Method> methods_;
    HistogramValues request_size_;
    HistogramValues response_size_;
    RequestSaturation saturation_;
    CodeFactory by_code_;
    // With exact codes: methods x kCodes counters, filled on first use.
    std::unique_ptr<std::atomic<Value*>[]> code_counters_;
    std::mutex code_mutex_;  // fills code_counters_
    std::atomic<long> in_flight_{0};
    std::mutex busy_mutex_;  // orders the busy gauge's 0/1 writes
};

// Gauges of this process refreshed every `interval` on a thread of its own,
// and its CPU counter, which gets the CPU used since the sample before.
struct ResourceValues {
    Value* memory_bytes = nullptr;
    Value* cpu_percent = nullptr;
    Value* open_fds = nullptr;
    Value* threads = nullptr;
    Value* uptime_seconds = nullptr;
    Value* cpu_seconds_total = nullptr;
    Value* start_time_seconds = nullptr;
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
    double last_cpu_ = -1;     // for the percent: none before the first sample
    double counted_cpu_ = 0;   // added to the counter so far
    std::mutex sample_mutex_;  // sample() from the thread and from Python
    std::chrono::steady_clock::time_point last_time_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace gpe
