// A hostile stand-in for Redis, for faults a real redis-server cannot
// produce: a server on a free loopback port whose answers a test chooses
// (a bulk string announced as 2 GB and then streamed, a SCAN cursor that
// never comes back to 0, ...). One thread, one connection at a time, every
// loop bounded by the stop flag and a time limit.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace gpe::testing {

class FakeRedis {
  public:
    // Answers one command on `fd`; false closes the connection.
    using Handler = std::function<bool(FakeRedis& server, int fd, const std::vector<std::string>&)>;

    explicit FakeRedis(Handler handler) : handler_(std::move(handler)) {
        listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const int one = 1;
        ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
        socklen_t len = sizeof addr;
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
        port_ = ntohs(addr.sin_port);
        ::listen(listener_, 8);
        thread_ = std::thread([this] { run(); });
    }
    ~FakeRedis() {
        stop_ = true;
        thread_.join();
        ::close(listener_);
    }
    FakeRedis(const FakeRedis&) = delete;
    FakeRedis& operator=(const FakeRedis&) = delete;

    int port() const { return port_; }
    bool stopping() const { return stop_; }
    size_t commands() const { return commands_; }

    // Writes all of `data`; false if the peer went away or the server stops.
    bool send_all(int fd, std::string_view data) {
        while (!data.empty() && !stop_) {
            pollfd p{fd, POLLOUT, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
            if (n <= 0) return false;
            data.remove_prefix(static_cast<size_t>(n));
        }
        return data.empty();
    }

    // Streams filler bytes for at most `seconds`, `chunk` bytes every `pause`.
    void stream(int fd, double seconds, size_t chunk, std::chrono::milliseconds pause) {
        const std::string filler(chunk, 'x');
        const auto end = std::chrono::steady_clock::now() +
                         std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
        while (std::chrono::steady_clock::now() < end && send_all(fd, filler)) {
            if (pause.count() > 0) std::this_thread::sleep_for(pause);
        }
    }

  private:
    void run() {
        while (!stop_) {
            pollfd p{listener_, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) continue;
            serve(fd);
            ::close(fd);
        }
    }

    void serve(int fd) {
        std::string in;
        char buf[4096];
        while (!stop_) {
            std::vector<std::string> command;
            while (!parse(in, command)) {
                pollfd p{fd, POLLIN, 0};
                if (stop_) return;
                if (::poll(&p, 1, 50) <= 0) continue;
                const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
                if (n <= 0) return;
                in.append(buf, static_cast<size_t>(n));
            }
            ++commands_;
            if (!handler_(*this, fd, command)) return;
        }
    }

    // One RESP array of bulk strings from the front of `in`, if complete.
    static bool parse(std::string& in, std::vector<std::string>& out) {
        out.clear();
        size_t at = 0;
        auto line = [&](std::string& text) {
            const size_t end = in.find("\r\n", at);
            if (end == std::string::npos) return false;
            text = in.substr(at, end - at);
            at = end + 2;
            return true;
        };
        std::string head;
        if (!line(head) || head.empty() || head[0] != '*') return false;
        const long count = std::stol(head.substr(1));
        for (long i = 0; i < count; ++i) {
            std::string size;
            if (!line(size) || size.empty() || size[0] != '$') return false;
            const size_t len = std::stoul(size.substr(1));
            if (in.size() < at + len + 2) return false;
            out.push_back(in.substr(at, len));
            at += len + 2;
        }
        in.erase(0, at);
        return true;
    }

    Handler handler_;
    int listener_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<size_t> commands_{0};
    std::thread thread_;
};

}  // namespace gpe::testing
