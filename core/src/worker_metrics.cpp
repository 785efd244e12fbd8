#include "gpe/worker_metrics.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <string>

#include "gpe/clock.hpp"
#include "gpe/process_stats.hpp"

namespace gpe {

void HistogramValues::observe(double amount, const ExemplarLabels* exemplar) const {
    sum->inc(amount);
    // prometheus_client: the first bucket whose bound is >= amount (none for NaN).
    const auto it = std::lower_bound(bounds.begin(), bounds.end(), amount);
    if (it == bounds.end() || !(amount <= *it)) return;
    Value* bucket = buckets[static_cast<size_t>(it - bounds.begin())];
    bucket->inc(1.0);
    if (exemplar != nullptr && !exemplar->empty())
        bucket->set_exemplar(*exemplar, amount, unix_time());
}

RequestRecorder::RequestRecorder(std::vector<Method> methods, HistogramValues request_size,
                                 HistogramValues response_size, RequestSaturation saturation,
                                 CodeFactory by_code)
    : methods_(std::move(methods)),
      request_size_(std::move(request_size)),
      response_size_(std::move(response_size)),
      saturation_(saturation),
      by_code_(std::move(by_code)) {
    if (methods_.empty()) throw std::invalid_argument("RequestRecorder needs at least one method");
    if (by_code_) {
        const size_t slots = methods_.size() * kCodes;
        code_counters_ = std::make_unique<std::atomic<Value*>[]>(slots);
        for (size_t i = 0; i < slots; ++i) code_counters_[i].store(nullptr);
    }
}

int RequestRecorder::status_class(int status) {
    return status >= 100 && status < 600 ? status / 100 - 1 : kStatusClasses - 1;
}

std::string RequestRecorder::status_code_label(int status) {
    return status >= kFirstCode && status < kFirstCode + kCodes - 1 ? std::to_string(status)
                                                                    : "other";
}

size_t RequestRecorder::method_index(std::string_view name) const {
    for (size_t i = 0; i < methods_.size(); ++i) {
        const std::string& known = methods_[i].name;
        if (known.size() == name.size() &&
            std::equal(name.begin(), name.end(), known.begin(), [](char a, char b) {
                return std::toupper(static_cast<unsigned char>(a)) == b;
            })) {
            return i;
        }
    }
    return methods_.size() - 1;  // "other": the label set stays bounded
}

Value* RequestRecorder::requests_counter(size_t method, int status) {
    if (!by_code_) return methods_[method].requests[status_class(status)];
    const int code =
        status >= kFirstCode && status < kFirstCode + kCodes - 1 ? status - kFirstCode : kCodes - 1;
    std::atomic<Value*>& slot = code_counters_[method * kCodes + static_cast<size_t>(code)];
    if (Value* value = slot.load(std::memory_order_acquire)) return value;
    // First request with this code: the series is made once (bounded: kCodes per method).
    std::lock_guard lock(code_mutex_);
    if (Value* value = slot.load(std::memory_order_relaxed)) return value;
    Value* value = by_code_(method, status_code_label(status));
    if (value == nullptr) throw std::invalid_argument("the status code factory gave no value");
    slot.store(value, std::memory_order_release);
    return value;
}

void RequestRecorder::update_busy() {
    // Only on 0 <-> 1 transitions; under the lock the last writer reads the
    // count after every change before it, so busy ends as in_flight > 0.
    std::lock_guard lock(busy_mutex_);
    saturation_.busy->set(in_flight_.load() > 0 ? 1.0 : 0.0, 0);
}

void RequestRecorder::start() {
    const long before = in_flight_.fetch_add(1);
    if (saturation_.in_flight) saturation_.in_flight->inc(1.0);
    if (saturation_.busy && before == 0) update_busy();
}

void RequestRecorder::end_request() {
    long now = in_flight_.load();
    // Never below 0, even for a record() without its start().
    while (now > 0 && !in_flight_.compare_exchange_weak(now, now - 1)) {
    }
    if (now <= 0) return;
    if (saturation_.in_flight) saturation_.in_flight->inc(-1.0);
    if (saturation_.busy && now == 1) update_busy();
}

void RequestRecorder::record(std::string_view method_name, int status, double duration_seconds,
                             double request_bytes, double response_bytes, bool failed,
                             const ExemplarLabels* exemplar) {
    const size_t index = method_index(method_name);
    const Method& m = methods_[index];
    requests_counter(index, status)->inc(1.0);
    if (failed || status >= 500) m.failed->inc(1.0);
    m.duration.observe(duration_seconds, exemplar);
    if (request_size_.sum) request_size_.observe(request_bytes);
    if (response_size_.sum) response_size_.observe(response_bytes);
    end_request();
}

ResourceSampler::ResourceSampler(ResourceValues values, double interval_seconds)
    : values_(values), interval_(interval_seconds) {
    sample();
    thread_ = std::thread([this] { run(); });
}

ResourceSampler::~ResourceSampler() { stop(); }

void ResourceSampler::sample() {
    ProcessStats stats;
    try {
        stats = read_process_stats(::getpid());
    } catch (const std::exception&) {
        return;  // no /proc: the gauges keep their last values
    }
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(sample_mutex_);
    if (values_.memory_bytes) values_.memory_bytes->set(stats.resident_bytes, 0);
    if (values_.open_fds) values_.open_fds->set(stats.open_fds, 0);
    if (values_.threads) values_.threads->set(stats.threads, 0);
    if (values_.uptime_seconds) {
        values_.uptime_seconds->set(std::max(0.0, unix_time() - stats.start_time), 0);
    }
    if (values_.start_time_seconds) values_.start_time_seconds->set(stats.start_time, 0);
    if (values_.cpu_percent && last_cpu_ >= 0) {
        const double elapsed = std::chrono::duration<double>(now - last_time_).count();
        if (elapsed > 0)
            values_.cpu_percent->set(100.0 * (stats.cpu_seconds - last_cpu_) / elapsed, 0);
    }
    // A fork starts a process's CPU times at 0, so the first sample adds all
    // of the worker's CPU; the counter only ever grows.
    if (values_.cpu_seconds_total && stats.cpu_seconds > counted_cpu_) {
        values_.cpu_seconds_total->inc(stats.cpu_seconds - counted_cpu_);
        counted_cpu_ = stats.cpu_seconds;
    }
    last_cpu_ = stats.cpu_seconds;
    last_time_ = now;
}

void ResourceSampler::run() {
    std::unique_lock lock(mutex_);
    while (!wake_.wait_for(lock, interval_, [this] { return stopping_; })) {
        lock.unlock();
        sample();
        lock.lock();
    }
}

void ResourceSampler::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

}  // namespace gpe
