// The agent's configuration: its flags and the environment, resolved through
// the settings table (gpe/settings.hpp) by one pure function, which the tests
// call without starting anything.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gpe/redis/layout.hpp"
#include "gpe/redis/options.hpp"
#include "gpe/settings.hpp"
#include "http_server.hpp"

namespace gpe::agent {

using Environment = std::map<std::string, std::string>;

// The flags given, by name ("--port"), as text; a switch is "true".
using Flags = std::map<std::string, std::string>;

struct Config {
    bool help = false;
    std::string directory;
    std::string source;  // files or redis
    HttpOptions http;
    bool value_only_files = false;
    bool mirror = false;
    bool serve = true;  // --no-http: mirror only
    bool password_stdin = false;
    bool sentinel_password_stdin = false;  // the line after the password, if both
    std::optional<redis::Options> redis;
    std::string prefix;
    redis::Layout layout = redis::Layout::instance;
    std::string instance;  // "" the hostname
    int ttl = 0;
    double interval = 0;
    pid_t parent = 0;
};

// Splits argv (without the program name) into flags known to the table;
// throws settings::SettingError for an unknown one or a missing value.
Flags split_flags(const std::vector<std::string>& args);

// The configuration of `args` with `env` beneath (a flag wins over its
// variable); throws settings::SettingError naming what is wrong.
Config resolve(const std::vector<std::string>& args, const Environment& env);

}  // namespace gpe::agent
