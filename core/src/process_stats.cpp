#include "gpe/process_stats.hpp"

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>

namespace gpe {

namespace {

double boot_time() {
    std::ifstream stat("/proc/stat");
    std::string word;
    while (stat >> word) {
        if (word == "btime") {
            double value = 0;
            stat >> value;
            return value;
        }
    }
    return 0;
}

}  // namespace

ProcessStats read_process_stats(pid_t pid) {
    const std::string base = "/proc/" + std::to_string(pid);
    ProcessStats stats;
    std::ifstream stat_file(base + "/stat");
    std::string line;
    if (!std::getline(stat_file, line)) throw std::runtime_error("cannot read " + base + "/stat");
    // The command name (field 2) may hold spaces and ')': fields resume after the last ')'.
    std::istringstream fields(line.substr(line.rfind(')') + 2));
    std::string field;
    double utime = 0, stime = 0, threads = 0, starttime = 0, rss_pages = 0;
    for (int index = 3; fields >> field; ++index) {
        switch (index) {
            case 14:
                utime = std::stod(field);
                break;
            case 15:
                stime = std::stod(field);
                break;
            case 20:
                threads = std::stod(field);
                break;
            case 22:
                starttime = std::stod(field);
                break;
            case 24:
                rss_pages = std::stod(field);
                break;
            default:
                break;
        }
    }
    static const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    static const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
    static const double booted = boot_time();  // constant for the life of the system
    stats.cpu_seconds = (utime + stime) / ticks;
    stats.threads = threads;
    stats.resident_bytes = rss_pages * page;
    stats.start_time = booted + starttime / ticks;
    if (DIR* dir = ::opendir((base + "/fd").c_str())) {
        int count = 0;
        while (const dirent* entry = ::readdir(dir)) {
            if (entry->d_name[0] != '.') ++count;
        }
        ::closedir(dir);
        stats.open_fds = count;
    }
    return stats;
}

unsigned listen_backlog(int fd) {
    tcp_info info{};
    socklen_t size = sizeof info;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) != 0) {
        throw std::system_error(errno, std::generic_category(),
                                "TCP_INFO of socket " + std::to_string(fd));
    }
    // For a listening socket the kernel reports its accept queue's length here.
    return info.tcpi_unacked;
}

}  // namespace gpe
