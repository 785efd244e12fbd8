#include "gpe/worker_metrics.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ctime>
#include <deque>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "gpe/file_descriptor.hpp"
#include "gpe/process_stats.hpp"
#include "gpe/series_key.hpp"
#include "temp_dir.hpp"

namespace gpe {
namespace {

using testing::TempDir;
using Pairs = std::vector<std::pair<std::string, std::string>>;

// Values of one recorder: a request counter per status class for each of
// two methods, failures, durations; in flight and busy.
class RecorderTest : public ::testing::Test {
  protected:
    void SetUp() override { ValueStore::instance().set_directory(dir_.path()); }
    void TearDown() override { ValueStore::instance().set_directory(""); }

    Value* make(const std::string& prefix, const std::string& name) {
        values_.push_back(
            std::make_unique<Value>(prefix, encode_series_key(name, name, {}, {}, "h")));
        return values_.back().get();
    }

    std::vector<RequestRecorder::Method> methods() {
        std::vector<RequestRecorder::Method> table;
        for (const char* name : {"GET", "other"}) {
            RequestRecorder::Method m;
            m.name = name;
            for (int i = 0; i < RequestRecorder::kStatusClasses; ++i)
                m.requests[i] = make("counter", std::string(name) + std::to_string(i));
            m.failed = make("counter", std::string(name) + "_failed");
            m.duration.bounds = {1.0};
            m.duration.buckets = {make("histogram", std::string(name) + "_b")};
            m.duration.sum = make("histogram", std::string(name) + "_s");
            table.push_back(std::move(m));
        }
        return table;
    }

    TempDir dir_;
    std::deque<std::unique_ptr<Value>> values_;
};

TEST_F(RecorderTest, InFlightAndBusyFollowStartAndRecord) {
    Value* in_flight = make("gauge_livesum", "in_flight");
    Value* busy = make("gauge_livesum", "busy");
    RequestRecorder recorder(methods(), {}, {}, {in_flight, busy});
    recorder.start();
    recorder.start();
    EXPECT_EQ(in_flight->get(), 2);
    EXPECT_EQ(busy->get(), 1);
    recorder.record("get", 200, 0.1, 0, 0, false);
    EXPECT_EQ(in_flight->get(), 1);
    EXPECT_EQ(busy->get(), 1);
    recorder.record("GET", 503, 0.1, 0, 0, false);
    EXPECT_EQ(in_flight->get(), 0);
    EXPECT_EQ(busy->get(), 0);
    // A record without its start never takes the gauges below 0.
    recorder.record("GET", 200, 0.1, 0, 0, false);
    EXPECT_EQ(in_flight->get(), 0);
    EXPECT_EQ(recorder.in_flight(), 0);
}

TEST_F(RecorderTest, TheExemplarGoesOnTheDurationBucketObserved) {
    auto table = methods();
    Value* bucket = table[0].duration.buckets[0];
    RequestRecorder recorder(std::move(table), {}, {});
    recorder.record("GET", 200, 0.25, 0, 0, false);  // no exemplar given
    EXPECT_FALSE(bucket->exemplar().has_value());
    const ExemplarLabels trace(Pairs{{"trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"}});
    recorder.record("GET", 200, 0.5, 0, 0, false, &trace);
    const auto stored = bucket->exemplar();
    ASSERT_TRUE(stored.has_value());
    EXPECT_EQ(stored->labels, trace.encoded());
    EXPECT_EQ(stored->value, 0.5);
    EXPECT_EQ(bucket->get(), 2);
    // Above every bound: no bucket observes it, the last exemplar stays.
    const ExemplarLabels other(Pairs{{"trace_id", "00000000000000000000000000000001"}});
    recorder.record("GET", 200, 5.0, 0, 0, false, &other);
    EXPECT_EQ(bucket->exemplar()->labels, trace.encoded());
}

TEST_F(RecorderTest, BusyEndsExactAfterConcurrentRequests) {
    Value* in_flight = make("gauge_livesum", "in_flight");
    Value* busy = make("gauge_livesum", "busy");
    RequestRecorder recorder(methods(), {}, {}, {in_flight, busy});
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 20000; ++i) {
                recorder.start();
                recorder.record("GET", 200, 0.0, 0, 0, false);
            }
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(in_flight->get(), 0);
    EXPECT_EQ(busy->get(), 0);
    recorder.start();
    EXPECT_EQ(busy->get(), 1);
}

TEST_F(RecorderTest, ExactCodesAreMadeOnceAtFirstUseAndBounded) {
    std::vector<std::string> made;
    RequestRecorder recorder(methods(), {}, {}, {}, [&](size_t method, const std::string& status) {
        made.push_back(std::to_string(method) + ":" + status);
        return make("counter", made.back());
    });
    for (int status : {200, 200, 418, 99, 600, 0}) {
        recorder.start();
        recorder.record("PATCH", status, 0.0, 0, 0, false);
    }
    recorder.start();
    recorder.record("GET", 200, 0.0, 0, 0, false);
    EXPECT_EQ(made, (std::vector<std::string>{"1:200", "1:418", "1:other", "0:200"}));
    EXPECT_EQ(RequestRecorder::status_code_label(599), "599");
    EXPECT_EQ(RequestRecorder::status_code_label(100), "100");
    EXPECT_EQ(RequestRecorder::status_code_label(600), "other");
}

TEST_F(RecorderTest, CpuCounterOnlyGrowsWithTheProcessCpu) {
    Value* cpu = make("counter", "cpu");
    Value* started = make("gauge_liveall", "start");
    ResourceSampler sampler({.cpu_seconds_total = cpu, .start_time_seconds = started}, 3600);
    const double first = cpu->get();
    // This process's CPU so far (it was not forked for the test: all of it).
    EXPECT_NEAR(first, read_process_stats(::getpid()).cpu_seconds, 0.05);
    // Burn 0.15 s of this process's CPU (not of the wall clock: the machine may be busy).
    const std::clock_t until = std::clock() + CLOCKS_PER_SEC * 15 / 100;
    while (std::clock() < until) {
    }
    sampler.sample();
    EXPECT_GE(cpu->get(), first + 0.1);
    EXPECT_GT(started->get(), 1e9);  // a unix time
    EXPECT_LE(started->get(), static_cast<double>(::time(nullptr)) + 1);
}

TEST(ListenBacklog, CountsConnectionsNotAccepted) {
    FileDescriptor listener(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    ASSERT_EQ(::listen(listener.get(), 16), 0);
    socklen_t size = sizeof address;
    ASSERT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &size), 0);
    EXPECT_EQ(listen_backlog(listener.get()), 0u);
    std::vector<FileDescriptor> clients;
    for (int i = 0; i < 3; ++i) {
        clients.emplace_back(::socket(AF_INET, SOCK_STREAM, 0));
        ASSERT_EQ(
            ::connect(clients.back().get(), reinterpret_cast<sockaddr*>(&address), sizeof address),
            0);
    }
    EXPECT_EQ(listen_backlog(listener.get()), 3u);
    FileDescriptor accepted(::accept(listener.get(), nullptr, nullptr));
    EXPECT_EQ(listen_backlog(listener.get()), 2u);
}

TEST(ListenBacklog, NamesTheCauseForWhatIsNoTcpSocket) {
    FileDescriptor unix_socket(::socket(AF_UNIX, SOCK_STREAM, 0));
    EXPECT_THROW(listen_backlog(unix_socket.get()), std::system_error);
    try {
        listen_backlog(-1);
        FAIL() << "no error for a closed descriptor";
    } catch (const std::system_error& error) {
        EXPECT_NE(std::string(error.what()).find("TCP_INFO of socket -1"), std::string::npos);
    }
}

}  // namespace
}  // namespace gpe
