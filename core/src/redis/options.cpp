#include "gpe/redis/options.hpp"

#include <charconv>
#include <stdexcept>
#include <string>

namespace gpe::redis {

namespace {

std::string percent_decode(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '%' && i + 2 < text.size()) {
            int value = 0;
            auto [ptr, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
            if (ec == std::errc() && ptr == text.data() + i + 3) {
                out.push_back(static_cast<char>(value));
                i += 2;
                continue;
            }
        }
        out.push_back(text[i]);
    }
    return out;
}

// What messages may say of the URL being parsed: its shape ("redis://..."),
// and whether they may quote parts of it (`echo`). Not in a URL with
// userinfo: a password with an unescaped '?' is split wrongly, and part of it
// would be quoted as the port or database.
struct UrlContext {
    std::string shape;
    bool echo;
};

int parse_int(std::string_view text, std::string_view what, const UrlContext& url) {
    int value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || ptr != text.data() + text.size() || value < 0) {
        throw std::invalid_argument("invalid " + std::string(what) +
                                    (url.echo ? " '" + std::string(text) + "'" : std::string()) +
                                    " in Redis URL " + url.shape);
    }
    return value;
}

// "redis", "rediss" or "unix".
std::string_view parse_scheme(std::string_view url) {
    const size_t scheme_end = url.find("://");
    if (scheme_end == std::string_view::npos) {
        throw std::invalid_argument(
            "Redis URL must start with redis://, rediss:// or unix:// (got no scheme)");
    }
    const std::string_view scheme = url.substr(0, scheme_end);
    if (scheme != "redis" && scheme != "rediss" && scheme != "unix") {
        throw std::invalid_argument("unsupported Redis URL scheme '" + std::string(scheme) +
                                    "' (use redis://, rediss:// or unix://)");
    }
    return scheme;
}

// Takes "?query" off the end of `rest` and returns it (without the '?').
std::string_view split_query(std::string_view& rest) {
    const size_t q = rest.find('?');
    if (q == std::string_view::npos) return {};
    const std::string_view query = rest.substr(q + 1);
    rest = rest.substr(0, q);
    return query;
}

// Takes "user:password@" (user may be empty) off the front of `rest`.
void parse_credentials(std::string_view& rest, Options& options) {
    const size_t at = rest.rfind('@');
    if (at == std::string_view::npos) return;
    const std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (const size_t colon = userinfo.find(':'); colon != std::string_view::npos) {
        options.username = percent_decode(userinfo.substr(0, colon));
        options.password = percent_decode(userinfo.substr(colon + 1));
    } else {
        options.username = percent_decode(userinfo);  // as redis-py reads redis://user@host
    }
}

void parse_socket_path(std::string_view rest, Options& options) {
    if (rest.empty() || rest.front() != '/') {
        throw std::invalid_argument("unix:// Redis URL needs an absolute socket path");
    }
    options.unix_socket = percent_decode(rest);
}

// host, host:port, [v6], [v6]:port; either may be empty (localhost, 6379).
void parse_host_port(std::string_view hostport, Options& options, const UrlContext& url) {
    if (!hostport.empty() && hostport.front() == '[') {  // [::1]:6379
        const size_t close = hostport.find(']');
        if (close == std::string_view::npos) {
            throw std::invalid_argument("unterminated IPv6 address in Redis URL " + url.shape);
        }
        options.host = std::string(hostport.substr(1, close - 1));
        hostport = hostport.substr(close + 1);
        if (!hostport.empty() && hostport.front() == ':') {
            options.port = parse_int(hostport.substr(1), "port", url);
        }
    } else if (const size_t colon = hostport.rfind(':'); colon != std::string_view::npos) {
        options.host = std::string(hostport.substr(0, colon));
        options.port = parse_int(hostport.substr(colon + 1), "port", url);
    } else if (!hostport.empty()) {
        options.host = std::string(hostport);
    }
    if (options.host.empty()) options.host = "localhost";
    if (options.port == 0 || options.port > 65535) {
        throw std::invalid_argument("invalid port in Redis URL " + url.shape);
    }
}

// host[:port][/db]
void parse_server(std::string_view rest, Options& options, const UrlContext& url) {
    std::string_view hostport = rest;
    if (const size_t slash = rest.find('/'); slash != std::string_view::npos) {
        hostport = rest.substr(0, slash);
        const std::string_view db = rest.substr(slash + 1);
        if (!db.empty()) options.db = parse_int(db, "database", url);
    }
    parse_host_port(hostport, options, url);
}

void apply_query_parameter(std::string_view name, const std::string& value, Options& options,
                           const UrlContext& url) {
    if (name == "db") {
        options.db = parse_int(value, "database", url);
    } else if (name == "password") {
        options.password = value;
    } else if (name == "username") {
        options.username = value;
    } else if (name == "ssl_ca_certs") {
        options.tls.ca_file = value;
    } else if (name == "ssl_ca_path") {
        options.tls.ca_path = value;
    } else if (name == "ssl_certfile") {
        options.tls.cert_file = value;
    } else if (name == "ssl_keyfile") {
        options.tls.key_file = value;
    } else if (name == "ssl_cert_reqs") {
        options.tls.verify = !(value == "none" || value == "CERT_NONE");
    }
    // Other redis-py options (socket_timeout, ...) do not change the target.
}

void parse_query(std::string_view query, Options& options, const UrlContext& url) {
    while (!query.empty()) {
        const size_t amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        const size_t eq = pair.find('=');
        const std::string value =
            eq == std::string_view::npos ? std::string() : percent_decode(pair.substr(eq + 1));
        apply_query_parameter(pair.substr(0, eq), value, options, url);
    }
}

}  // namespace

Options parse_url(std::string_view url) {
    Options options;
    const std::string_view scheme = parse_scheme(url);
    const UrlContext context{std::string(scheme) + "://...",
                             url.find('@') == std::string_view::npos};
    options.tls.enabled = scheme == "rediss";
    std::string_view rest = url.substr(scheme.size() + 3);
    const std::string_view query = split_query(rest);
    parse_credentials(rest, options);
    if (scheme == "unix") {
        parse_socket_path(rest, options);
    } else {
        parse_server(rest, options, context);
    }
    parse_query(query, options, context);
    return options;
}

std::string format_seconds(double seconds) {
    std::string text = std::to_string(seconds);
    text.erase(text.find_last_not_of('0') + 1);
    if (text.ends_with('.')) text.pop_back();
    return text;
}

std::string describe(const Options& options) {
    std::string out = options.unix_socket.empty()
                          ? options.host + ":" + std::to_string(options.port)
                          : "unix:" + options.unix_socket;
    out += "/" + std::to_string(options.db);
    if (options.tls.enabled) out += " (TLS)";
    if (!options.username.empty()) out += " as " + options.username;
    return out;
}

}  // namespace gpe::redis
