#include "gpe/worker_metrics.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "gpe/clock.hpp"
#include "gpe/process_stats.hpp"

namespace gpe {

void HistogramValues::observe(double amount) const {
    sum->inc(amount);
    // prometheus_client: the first bucket whose bound is >= amount (none for NaN).
    const auto it = std::lower_bound(bounds.begin(), bounds.end(), amount);
    if (it != bounds.end() && amount <= *it)
        buckets[static_cast<size_t>(it - bounds.begin())]->inc(1.0);
}

RequestRecorder::RequestRecorder(std::vector<Method> methods, HistogramValues request_size,
                                 HistogramValues response_size)
    : methods_(std::move(methods)),
      request_size_(std::move(request_size)),
      response_size_(std::move(response_size)) {
    if (methods_.empty()) throw std::invalid_argument("RequestRecorder needs at least one method");
}

int RequestRecorder::status_class(int status) {
    return status >= 100 && status < 600 ? status / 100 - 1 : kStatusClasses - 1;
}

const RequestRecorder::Method& RequestRecorder::method(std::string_view name) const {
    for (const Method& m : methods_) {
        if (m.name.size() == name.size() &&
            std::equal(name.begin(), name.end(), m.name.begin(), [](char a, char b) {
                return std::toupper(static_cast<unsigned char>(a)) == b;
            })) {
            return m;
        }
    }
    return methods_.back();  // "other": the label set stays bounded
}

void RequestRecorder::record(std::string_view method_name, int status, double duration_seconds,
                             double request_bytes, double response_bytes, bool failed) const {
    const Method& m = method(method_name);
    m.requests[status_class(status)]->inc(1.0);
    if (failed || status >= 500) m.failed->inc(1.0);
    m.duration.observe(duration_seconds);
    if (request_size_.sum) request_size_.observe(request_bytes);
    if (response_size_.sum) response_size_.observe(response_bytes);
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
    if (values_.memory_bytes) values_.memory_bytes->set(stats.resident_bytes, 0);
    if (values_.open_fds) values_.open_fds->set(stats.open_fds, 0);
    if (values_.threads) values_.threads->set(stats.threads, 0);
    if (values_.uptime_seconds) {
        values_.uptime_seconds->set(std::max(0.0, unix_time() - stats.start_time), 0);
    }
    if (values_.cpu_percent && last_cpu_ >= 0) {
        const double elapsed = std::chrono::duration<double>(now - last_time_).count();
        if (elapsed > 0)
            values_.cpu_percent->set(100.0 * (stats.cpu_seconds - last_cpu_) / elapsed, 0);
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
